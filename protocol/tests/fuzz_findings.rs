//! Regressions found by the decoder fuzzing of issue 11
//! (`breakwater-simulations fuzz`).

use breakwater_protocol::fixture::{Fixture, fixture_green_key, fixture_org};
use breakwater_protocol::*;

/// A copied signature made other bytes of a signed roster valid: anyone
/// could re-encode a roster version into a different object.
#[test]
fn issue11_a_repeated_roster_signer_is_refused() {
    for fixture in [Fixture::new(3, 1).unwrap(), Fixture::legacy(3, 1).unwrap()] {
        let mut genesis = fixture.roster.clone();
        assert!(genesis.verify_genesis().is_ok());
        let copy = genesis.signatures[0].clone();
        genesis.signatures.push(copy.clone());
        assert_eq!(
            genesis.verify_genesis(),
            Err(RosterError::DuplicateSigner(copy.signer))
        );
        let bytes = genesis.encode();
        let decoded = SignedRoster::decode(&bytes).unwrap();
        assert!(decoded.verify_genesis().is_err());

        let mut next = fixture
            .roster()
            .with_member(fixture_org(3, 1).card)
            .unwrap();
        if fixture.roster().green.is_some() {
            next = next.with_green_key(&fixture_green_key(2)).unwrap();
        }
        let mut update = SignedRoster::unsigned(next);
        update.sign(fixture.keys(0, 0).unwrap());
        assert!(SignedRoster::verify_update(fixture.roster(), &update).is_ok());
        let copy = update.signatures[0].clone();
        update.signatures.push(copy.clone());
        assert_eq!(
            SignedRoster::verify_update(fixture.roster(), &update),
            Err(RosterError::DuplicateSigner(copy.signer))
        );
    }
}
