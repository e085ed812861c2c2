//! Concurrency leases: under any interleaving of acquires (new, named, renewing), releases and
//! time, never more than `limit` leases are live, a named live lease is always renewed, and a
//! holder that never releases frees its slot when its lease ends.
use proptest::prelude::*;
use ratelimit_core::lease::LeaseSet;

#[derive(Debug, Clone)]
enum Step {
    Acquire { id: Option<u8>, lease_ms: u64 },
    Release { id: u8 },
    Wait { ms: u64 },
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        4 => (prop::option::of(0u8..8), 1u64..=300)
            .prop_map(|(id, lease_ms)| Step::Acquire { id, lease_ms }),
        2 => (0u8..8).prop_map(|id| Step::Release { id }),
        2 => (0u64..=200).prop_map(|ms| Step::Wait { ms }),
    ];
    prop::collection::vec(step, 1..200)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_more_than_the_limit(limit in 1u64..=5, steps in steps()) {
        let mut set = LeaseSet::new();
        let mut now_ms = 1_000_000u64;
        // The model: who holds a lease, until when.
        let mut held: Vec<(Vec<u8>, u64)> = Vec::new();
        for step in steps {
            held.retain(|(_, until)| *until > now_ms);
            match step {
                Step::Acquire { id, lease_ms } => {
                    let name = id.map(|id| vec![b'h', id]);
                    let holds = name.as_ref().is_some_and(|n| held.iter().any(|(h, _)| h == n));
                    let (decision, granted) = set.acquire(limit, lease_ms, now_ms * 1000, name.as_deref());
                    prop_assert_eq!(decision.allowed, granted.is_some());
                    if holds {
                        prop_assert!(decision.allowed, "a live lease is always renewed");
                    } else {
                        prop_assert_eq!(decision.allowed, (held.len() as u64) < limit);
                    }
                    if let Some(id) = granted {
                        held.retain(|(h, _)| *h != id);
                        held.push((id, now_ms + lease_ms));
                    } else {
                        let earliest = held.iter().map(|(_, u)| *u).min().unwrap();
                        prop_assert_eq!(decision.retry_after_ms as u64, earliest - now_ms);
                    }
                    prop_assert!(held.len() as u64 <= limit);
                    prop_assert_eq!(decision.remaining, limit - held.len() as u64);
                }
                Step::Release { id } => {
                    let name = vec![b'h', id];
                    let holds = held.iter().any(|(h, _)| *h == name);
                    prop_assert_eq!(set.release(&name, now_ms), holds);
                    held.retain(|(h, _)| *h != name);
                }
                Step::Wait { ms } => now_ms += ms,
            }
            let live: Vec<(Vec<u8>, u64)> = set.leases(now_ms).map(|(i, e)| (i.to_vec(), e)).collect();
            let mut model = held.clone();
            model.retain(|(_, until)| *until > now_ms);
            model.sort();
            prop_assert_eq!(live, model);
        }
    }
}
