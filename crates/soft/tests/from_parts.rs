//! `Message::from_parts`: every message a sparsifier makes passes unchanged,
//! and every inconsistency of a message from outside is rejected by name.
#![allow(clippy::unwrap_used)]

mod common;

use common::client;
use proptest::prelude::*;
use wflora_soft::{Dims, Message, MethodKind, Payload, Residual, SoftError, SparseValues, Support};

/// `(d, l, r)` of the hand-made cases, and the kept components.
const D: usize = 6;
const L: usize = 5;
const R: usize = 4;
const M: usize = 2;
const DIMS: Dims = Dims { d: D, l: L, r: R };

/// The message `kind` makes at `m` for a seeded client.
fn made(kind: MethodKind, dims: Dims, m: usize, seed: u64) -> Message {
    let c = client(seed, dims.d, dims.l, dims.r, true);
    let residual = if kind == MethodKind::SLora {
        Residual::Zero
    } else {
        c.residual.clone()
    };
    kind.sparsifier(true, seed)
        .compress(c.base.view(), c.update.view(), &residual, m)
        .unwrap()
        .0
}

/// The payload of the `kind` message of the hand-made cases.
fn payload(kind: MethodKind) -> Payload {
    made(kind, DIMS, M, 1).payload().clone()
}

/// `from_parts` fails with a malformed-message reason mentioning `field`.
#[track_caller]
fn rejected(method: MethodKind, dims: Dims, payload: Payload, field: &str) {
    let err = Message::from_parts(method, dims, payload).unwrap_err();
    match &err {
        SoftError::MalformedMessage { reason } => {
            assert!(reason.contains(field), "{field:?} not named in {reason:?}");
        }
        other => panic!("expected MalformedMessage about {field}, got {other:?}"),
    }
    assert!(err.to_string().contains(field), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Every message of every method, at every m, passes unchanged.
    #[test]
    fn messages_of_every_sparsifier_pass_unchanged(
        seed in any::<u64>(), d in 1usize..20, l in 1usize..20, r in 1usize..9, mf in 0.0f64..1.0,
    ) {
        let m = (1 + (r as f64 * mf) as usize).min(r);
        for kind in MethodKind::ALL {
            let msg = made(kind, Dims { d, l, r }, m, seed);
            let back = Message::from_parts(msg.method(), msg.dims(), msg.payload().clone());
            prop_assert_eq!(back.as_ref(), Ok(&msg), "{}", kind);
        }
    }
}

#[test]
fn the_hand_made_cases_pass_before_they_are_broken() {
    for kind in MethodKind::ALL {
        let msg = made(kind, DIMS, M, 1);
        assert_eq!(
            Message::from_parts(kind, DIMS, payload(kind)).unwrap(),
            msg,
            "{kind}"
        );
    }
    // The shapes the cases below assume.
    assert!(matches!(
        payload(MethodKind::Soft),
        Payload::Components {
            support: Support::Some(ref ix),
            ..
        } if ix.len() == M
    ));
    assert!(matches!(
        payload(MethodKind::TLora),
        Payload::Elements {
            b: SparseValues {
                support: Support::Some(_),
                ..
            },
            ..
        }
    ));
    assert!(matches!(
        payload(MethodKind::SLora),
        Payload::Triplets { rank: M, .. }
    ));
}

#[test]
fn a_payload_kind_that_does_not_fit_the_method() {
    let components = payload(MethodKind::Soft);
    let elements = payload(MethodKind::TLora);
    let triplets = payload(MethodKind::SLora);
    for (method, wrong) in [
        (MethodKind::Soft, &elements),
        (MethodKind::Soft, &triplets),
        (MethodKind::SoftDelta, &elements),
        (MethodKind::ILora, &triplets),
        (MethodKind::TLora, &components),
        (MethodKind::RLora, &triplets),
        (MethodKind::SLora, &components),
        (MethodKind::SLora, &elements),
    ] {
        rejected(method, DIMS, wrong.clone(), "method");
    }
    // and the right ones pass, whichever method of the kind
    for (method, right) in [
        (MethodKind::SoftDelta, &components),
        (MethodKind::ILora, &components),
        (MethodKind::RLora, &elements),
    ] {
        assert!(Message::from_parts(method, DIMS, right.clone()).is_ok());
    }
}

#[test]
fn dims_with_a_zero_or_an_overflow() {
    for kind in MethodKind::ALL {
        for dims in [
            Dims { d: 0, ..DIMS },
            Dims { l: 0, ..DIMS },
            Dims { r: 0, ..DIMS },
            Dims {
                d: usize::MAX,
                ..DIMS
            },
            Dims {
                l: usize::MAX / 2,
                d: 3,
                r: 1,
            },
        ] {
            rejected(kind, dims, payload(kind), "dims");
        }
    }
}

/// The SOFT payload with `f` applied to its support, `b` and `a`.
fn components(f: impl FnOnce(&mut Support, &mut Vec<f32>, &mut Vec<f32>)) -> Payload {
    let mut p = payload(MethodKind::Soft);
    let Payload::Components { support, b, a } = &mut p else {
        unreachable!()
    };
    f(support, b, a);
    p
}

#[test]
fn bad_component_supports() {
    let soft = MethodKind::Soft;
    let set = |ix: Vec<usize>| components(|s, _, _| *s = Support::Some(ix));
    // not strictly increasing: decreasing, or a repeat
    rejected(soft, DIMS, set(vec![2, 1]), "payload.support");
    rejected(soft, DIMS, set(vec![1, 1]), "payload.support");
    // an index ≥ r
    rejected(soft, DIMS, set(vec![1, R]), "payload.support");
    rejected(soft, DIMS, set(vec![0, usize::MAX]), "payload.support");
    // more than r entries (with values to match, so that only the count is wrong)
    let too_many = components(|s, b, a| {
        *s = Support::Some((0..=R).collect());
        *b = vec![0.0; D * (R + 1)];
        *a = vec![0.0; (R + 1) * L];
    });
    rejected(soft, DIMS, too_many, "payload.support");
}

#[test]
fn component_values_of_the_wrong_length() {
    let soft = MethodKind::Soft;
    rejected(
        soft,
        DIMS,
        components(|_, b, _| {
            b.pop();
        }),
        "payload.b",
    );
    rejected(soft, DIMS, components(|_, b, _| b.push(0.0)), "payload.b");
    rejected(
        soft,
        DIMS,
        components(|_, _, a| {
            a.pop();
        }),
        "payload.a",
    );
    rejected(
        soft,
        DIMS,
        components(|_, _, a| a.extend([0.0; L])),
        "payload.a",
    );
    // Support::All means r components: d·r and r·l values, not d·m and m·l
    rejected(
        soft,
        DIMS,
        components(|s, _, _| *s = Support::All),
        "payload.b",
    );
    let all = components(|s, b, a| {
        *s = Support::All;
        *b = vec![0.0; D * R];
        *a = vec![0.0; R * L];
    });
    assert!(Message::from_parts(soft, DIMS, all).is_ok());
}

#[test]
fn non_finite_component_values() {
    for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        rejected(
            MethodKind::Soft,
            DIMS,
            components(|_, b, _| b[3] = x),
            "payload.b[3]",
        );
        rejected(
            MethodKind::Soft,
            DIMS,
            components(|_, _, a| a[0] = x),
            "payload.a[0]",
        );
    }
}

/// The TLoRA payload with `f` applied to its two sides.
fn elements(f: impl FnOnce(&mut SparseValues, &mut SparseValues)) -> Payload {
    let mut p = payload(MethodKind::TLora);
    let Payload::Elements { b, a } = &mut p else {
        unreachable!()
    };
    f(b, a);
    p
}

#[test]
fn bad_element_payloads() {
    let t = MethodKind::TLora;
    // len other than d·r resp. r·l
    rejected(t, DIMS, elements(|b, _| b.len += 1), "payload.b.len");
    rejected(t, DIMS, elements(|_, a| a.len = D * R), "payload.a.len");
    // supports: not strictly increasing, out of range, too long
    let swap = |s: &mut SparseValues| {
        let Support::Some(ix) = &mut s.support else {
            unreachable!()
        };
        ix.swap(0, 1);
    };
    rejected(t, DIMS, elements(|b, _| swap(b)), "payload.b.support");
    rejected(t, DIMS, elements(|_, a| swap(a)), "payload.a.support");
    let last_out = |s: &mut SparseValues| {
        let n = s.len;
        let Support::Some(ix) = &mut s.support else {
            unreachable!()
        };
        *ix.last_mut().unwrap() = n;
    };
    rejected(t, DIMS, elements(|b, _| last_out(b)), "payload.b.support");
    rejected(t, DIMS, elements(|_, a| last_out(a)), "payload.a.support");
    let too_long = elements(|_, a| {
        a.support = Support::Some((0..=R * L).collect());
        a.values = vec![0.0; R * L + 1];
    });
    rejected(t, DIMS, too_long, "payload.a.support");
    // values count ≠ support count
    rejected(
        t,
        DIMS,
        elements(|b, _| {
            b.values.pop();
        }),
        "payload.b.values",
    );
    rejected(
        t,
        DIMS,
        elements(|_, a| a.values.push(1.0)),
        "payload.a.values",
    );
    // Support::All: one value per position, len of them
    rejected(
        t,
        DIMS,
        elements(|b, _| b.support = Support::All),
        "payload.b.values",
    );
    let all = elements(|b, _| {
        b.support = Support::All;
        b.values = vec![0.5; D * R];
    });
    assert!(Message::from_parts(t, DIMS, all).is_ok());
    // non-finite values
    rejected(
        t,
        DIMS,
        elements(|b, _| b.values[0] = f32::NAN),
        "payload.b.values[0]",
    );
    rejected(
        t,
        DIMS,
        elements(|_, a| a.values[1] = f32::INFINITY),
        "payload.a.values[1]",
    );
}

/// The SLoRA payload with `f` applied to its fields.
fn triplets(f: impl FnOnce(&mut usize, &mut Vec<f32>, &mut Vec<f32>)) -> Payload {
    let mut p = payload(MethodKind::SLora);
    let Payload::Triplets { rank, u, vt } = &mut p else {
        unreachable!()
    };
    f(rank, u, vt);
    p
}

#[test]
fn bad_triplet_payloads() {
    let s = MethodKind::SLora;
    // rank above r, with values to match
    let above = triplets(|rank, u, vt| {
        *rank = R + 1;
        *u = vec![0.0; D * (R + 1)];
        *vt = vec![0.0; (R + 1) * L];
    });
    rejected(s, DIMS, above, "payload.rank");
    // rank r is fine (and so is rank 0, an empty update)
    for k in [0, R] {
        let ok = triplets(|rank, u, vt| {
            *rank = k;
            *u = vec![0.0; D * k];
            *vt = vec![0.0; k * L];
        });
        assert!(Message::from_parts(s, DIMS, ok).is_ok(), "rank {k}");
    }
    // lengths other than d·k and k·l
    rejected(
        s,
        DIMS,
        triplets(|_, u, _| {
            u.pop();
        }),
        "payload.u",
    );
    rejected(s, DIMS, triplets(|_, _, vt| vt.push(0.0)), "payload.vt");
    rejected(s, DIMS, triplets(|rank, _, _| *rank = 1), "payload.u");
    // non-finite values
    rejected(s, DIMS, triplets(|_, u, _| u[2] = f32::NAN), "payload.u[2]");
    rejected(
        s,
        DIMS,
        triplets(|_, _, vt| vt[0] = f32::NEG_INFINITY),
        "payload.vt[0]",
    );
}

#[test]
fn decode_and_aggregate_apply_the_same_checks() {
    // A message that bypasses from_parts (serde) is still caught where it is used.
    let msg = made(MethodKind::SLora, DIMS, M, 1);
    let mut json = serde_json::to_value(&msg).unwrap();
    json["payload"]["Triplets"]["rank"] = (R + 1).into();
    let bad: Message = serde_json::from_value(json).unwrap();
    let err = bad.decode().unwrap_err();
    assert!(err.to_string().contains("payload.rank"), "{err}");
}
