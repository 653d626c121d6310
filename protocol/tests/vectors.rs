//! Pinned wire vectors from fixed keys. Any change to the wire format, the
//! signing input, the sealing construction or the key derivation changes
//! these bytes and fails here. Regenerate deliberately, never casually.

use breakwater_protocol::body::Bulletin;
use breakwater_protocol::fixture::Fixture;
use breakwater_protocol::*;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

const T0: u64 = 1_790_000_000_000;

fn draft(seq: u64, prev: Digest, tlp: Tlp, kind: Kind, body: Body) -> Draft {
    Draft {
        seq,
        prev,
        created_at: T0,
        expires_at: T0 + 86_400_000,
        tlp,
        kind,
        body,
    }
}

fn vectors() -> Vec<(&'static str, Vec<u8>)> {
    let f = Fixture::legacy(3, 1).unwrap();
    let keys = f.keys(0, 0).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut bulletin = Bulletin::new("Phishing wave", Severity::High);
    bulletin
        .indicators
        .push(Indicator::parse("ipv4:203.0.113.7").unwrap());
    let clear = seal(
        keys,
        f.roster(),
        draft(
            1,
            Digest::ZERO,
            Tlp::Clear,
            Kind::Bulletin,
            Body::Bulletin(bulletin.clone()),
        ),
        &[],
        &mut rng,
    )
    .unwrap();
    let amber = seal(
        keys,
        f.roster(),
        draft(
            2,
            clear.id(),
            Tlp::Amber,
            Kind::Bulletin,
            Body::Bulletin(bulletin),
        ),
        &[f.orgs[1].org_id.clone()],
        &mut rng,
    )
    .unwrap();
    let retraction = seal(
        keys,
        f.roster(),
        draft(
            3,
            amber.id(),
            Tlp::Clear,
            Kind::Retraction { target: clear.id() },
            Body::Retraction {
                reason: "false positive".into(),
            },
        ),
        &[],
        &mut rng,
    )
    .unwrap();
    let sighting = seal(
        f.keys(1, 0).unwrap(),
        f.roster(),
        draft(
            1,
            Digest::ZERO,
            Tlp::Clear,
            Kind::Sighting { target: clear.id() },
            Body::Sighting {
                indicator: Indicator::parse("ipv4:203.0.113.7").unwrap(),
                seen_at: T0,
                note: None,
            },
        ),
        &[],
        &mut rng,
    )
    .unwrap();
    vec![
        ("clear bulletin", clear.encode()),
        ("amber bulletin", amber.encode()),
        ("retraction", retraction.encode()),
        ("sighting", sighting.encode()),
        ("roster", f.roster.encode()),
    ]
}

const PINNED: [(&str, &str); 5] = [
    (
        "clear bulletin",
        "010120272bfcfee47c63a3086b8c19fbec7ba078af3a06005d16354693a0f8bbf8e3602014ebfeb602b36637547513b5a0fe1cb9c1e454b6853901f0be09e8afae580b420120000000000000000000000000000000000000000000000000000000000000000080d8c1a28c348090dbcb8c340000002601000d5068697368696e6720776176650002000001000b3230332e302e3131332e370000000040366a13f7e6f02b4fb702eb910a56dd638dcca4ceae06c753fde2172a33e0369ae8ca4cad69e9e9db77662579e913afe1f51c770fc0c1e49ad3da6119dd873a04",
    ),
    (
        "amber bulletin",
        "010120272bfcfee47c63a3086b8c19fbec7ba078af3a06005d16354693a0f8bbf8e3602014ebfeb602b36637547513b5a0fe1cb9c1e454b6853901f0be09e8afae580b420220df2d118115c6dfa30af2f504b1ebefb26ab27a42c0375638330bea6ec6dfd1dd80d8c1a28c348090dbcb8c3402000208183c770dcebe3d14500720d1c82b3a5778a0071cd1a8579f3e6f1c3546b50c34076a5c30ba04475e0e73c2780f461e8027e18587b0544f93a1b86ad15bde6fdd5b18b76b6aa1df9e8332b5947c3b70ffe14a566007ff3f5b1908a41f1724da79eab050133da100c322cd93ca8d610eadbb6550048b4d64f9ce6b2e16f60a93e464a2685002f1296a73d58db97e882edea16f7e15223ed712501d691848960ad13966bcd015fb801ec0fc56b903c41e0c3721fe366b9f04673864cff6e67cb7cb414754cfbbf2d7c34c6275e160e48d350d88f045102dfb766346301223c1f15f9fb3300bf2cb8c0819fd40031082171a74669ea61adc755f558bbb88d98edbd35cabc4d8376ee7689816ff8341cb6bd040e649f96bfd835c950f42c4aacb28dd201c21b7c8944d94c12f04",
    ),
    (
        "retraction",
        "010120272bfcfee47c63a3086b8c19fbec7ba078af3a06005d16354693a0f8bbf8e3602014ebfeb602b36637547513b5a0fe1cb9c1e454b6853901f0be09e8afae580b420320f7f580019c08fda9a2fe09a052ed427236bb1d72e0ef83ee14a5a760563f563780d8c1a28c348090dbcb8c34000120df2d118115c6dfa30af2f504b1ebefb26ab27a42c0375638330bea6ec6dfd1dd001101010e66616c736520706f73697469766540dafd1e98d41d7a6f018cc3c368a79e452896ebbe9199aee6eaad29e95ea2f839e5ee7ddbf9cc8aa0a3a6e311961907b321cad704ba01ecd338e9e27877604605",
    ),
    (
        "sighting",
        "010120272bfcfee47c63a3086b8c19fbec7ba078af3a06005d16354693a0f8bbf8e360202f8636af384eb66121c4e5866eeb4d479af4f9907556fdd850fdbdf25754e5900120000000000000000000000000000000000000000000000000000000000000000080d8c1a28c348090dbcb8c34000220df2d118115c6dfa30af2f504b1ebefb26ab27a42c0375638330bea6ec6dfd1dd00170102000b3230332e302e3131332e370080d8c1a28c34004075cadb60f35960377f1f4655d19891c8226c3883150213f4705c1f14c2ea958f860eefdf70e101f19937286fa648d81dbfbe64423261bd59cb97ca416d33d305",
    ),
    (
        "roster",
        "01012000000000000000000000000000000000000000000000000000000000000000002000000000000000000000000000000000000000000000000000000000000000000d53616e20506564726f20426179030e706f72742d617574686f726974791f506f7274206f662053616e20506564726f2042617920417574686f726974790e706f72742d617574686f72697479012014ebfeb602b36637547513b5a0fe1cb9c1e454b6853901f0be09e8afae580b4220c26cbe1b42f9111d834dd8efd3529eba26faa1c9e320a83a67c146fb503b012600000d7368697070696e672d6c696e651550616369666963205368697070696e67204c696e650d7368697070696e672d6c696e6501202f8636af384eb66121c4e5866eeb4d479af4f9907556fdd850fdbdf25754e59020caf592605fada4ce9b258a1defe93cb7f1d5272d54ede1dcf849773ed1d2d4330000117465726d696e616c2d6f70657261746f7216486172626f72204d6172696e65205465726d696e616c117465726d696e616c2d6f70657261746f7201209c1462b260aceb02c3e4922e535ef3cf9bce6e97d1f6d74d6571a7cb58eab42620b59bbf1a7afa89dac19b97f41c8695a7b257a1f1a164645e3c5db34b61a66c150000010e706f72742d617574686f7269747901012014ebfeb602b36637547513b5a0fe1cb9c1e454b6853901f0be09e8afae580b4240de74c319bca795048719683b81736654e7a0edb831e5d4cbcf22d9a6a375272b794ad9b211292da7c79749665dd2c2e0de2f2a2848e2ac2df5f6f88c233dcc0b",
    ),
];

#[test]
fn wire_vectors_are_pinned() {
    let actual = vectors();
    let mut failures = Vec::new();
    for ((name, bytes), (pinned_name, pinned_hex)) in actual.iter().zip(PINNED) {
        assert_eq!(*name, pinned_name);
        if hex::encode(bytes) != pinned_hex {
            failures.push(format!("    (\"{name}\", \"{}\"),", hex::encode(bytes)));
        }
    }
    assert!(
        failures.is_empty(),
        "wire vectors changed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn pinned_vectors_decode_verify_and_open() {
    let f = Fixture::legacy(3, 1).unwrap();
    for (name, hex_bytes) in PINNED.iter().take(4) {
        let bytes = hex::decode(hex_bytes).unwrap();
        let env = Envelope::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        env.verify().unwrap();
        assert_eq!(env.encode(), bytes);
        let reader = f.keys(1, 0).unwrap();
        open(&env, reader).unwrap();
    }
    let roster = SignedRoster::decode(&hex::decode(PINNED[4].1).unwrap()).unwrap();
    roster.verify_genesis().unwrap();
}
