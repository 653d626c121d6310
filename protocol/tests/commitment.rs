//! L5 (issue 11), decided: no key commitment. An author who wraps a
//! different content key to some recipients of an AMBER/RED envelope
//! makes it "does not decrypt" for them; it never opens to a different
//! plaintext, and the envelope still validates (the signature covers the
//! wraps, so it is the author's doing, not a relay's).

use breakwater_protocol::fixture::{Fixture, bulletin_draft};
use breakwater_protocol::*;

use crate::{MemState, NOW, rng};

#[test]
fn l5_a_wrap_of_another_content_key_does_not_decrypt() {
    for fixture in [Fixture::new(3, 1).unwrap(), Fixture::legacy(3, 1).unwrap()] {
        let roster = fixture.roster();
        let author = fixture.keys(0, 0).unwrap();
        let reader = fixture.keys(1, 0).unwrap();
        let victim = fixture.keys(2, 0).unwrap();
        let recipients = [
            author.sealing_public(),
            reader.sealing_public(),
            victim.sealing_public(),
        ];
        let draft = || bulletin_draft(1, Digest::ZERO, Tlp::Red, "one story for all", NOW);
        // Two sealings of the same header under two fresh content keys.
        let mut rng = rng();
        let first = seal_to(author, roster, None, draft(), &recipients, &mut rng).unwrap();
        let second = seal_to(author, roster, None, draft(), &recipients, &mut rng).unwrap();
        assert_eq!(first.header.core_hash(), second.header.core_hash());
        // The author keeps the first body but gives the victim its wrap of
        // the second key, and signs the result: a validly signed envelope.
        let mut wraps = first.header.seal.recipients().to_vec();
        let victim_id = victim.sealing_public().key_id();
        let swapped = second
            .header
            .seal
            .recipients()
            .iter()
            .find(|r| r.key_id == victim_id)
            .unwrap()
            .clone();
        for w in &mut wraps {
            if w.key_id == victim_id {
                *w = swapped.clone();
            }
        }
        let mut header = first.header.clone();
        header.seal = Seal::Nodes(wraps);
        let forged = Envelope::sign(header, first.payload.clone(), author);
        let bytes = forged.encode();
        assert!(matches!(
            validate(&bytes, NOW + 1000, roster, &MemState::default()),
            Verdict::Accept(_)
        ));
        // The honest recipient reads it; the victim gets "does not
        // decrypt", never another plaintext.
        let body = open(&forged, reader).unwrap();
        assert_eq!(body, draft().body);
        assert_eq!(open(&forged, victim), Err(OpenError::Decrypt));
        assert_eq!(
            OpenError::Decrypt.to_string(),
            "payload does not decrypt",
            "the outcome is named"
        );
    }
}
