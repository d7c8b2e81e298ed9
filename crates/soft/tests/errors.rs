//! Bad input gives the right typed error, never a panic.
#![allow(clippy::unwrap_used)]

mod common;

use common::client;
use ndarray::Array2;
use wflora_soft::{
    Factors, FactorsView, Message, MethodKind, Residual, SoftError, aggregate, dropped_energy,
    importances, svd,
};

#[test]
fn shape_errors_name_the_field() {
    let c = client(1, 6, 5, 3, false);
    let s = MethodKind::Soft.sparsifier(true, 0);
    // A with the wrong number of rows
    let bad_a = Array2::<f32>::zeros((2, 5));
    let err = s
        .compress(
            FactorsView::new(c.base.b.view(), bad_a.view()),
            c.update.view(),
            &Residual::Zero,
            2,
        )
        .unwrap_err();
    assert_eq!(
        err,
        SoftError::Shape {
            field: "base.a",
            got: (2, 5),
            expected: (3, 5)
        }
    );
    // update of the wrong shape
    let bad_b = Array2::<f32>::zeros((6, 2));
    let err = s
        .compress(
            c.base.view(),
            FactorsView::new(bad_b.view(), c.update.a.view()),
            &Residual::Zero,
            2,
        )
        .unwrap_err();
    assert_eq!(
        err,
        SoftError::Shape {
            field: "update.b",
            got: (6, 2),
            expected: (6, 3)
        }
    );
    // residual of the wrong shape
    let res = Residual::Factors(Factors::new(c.base.b.clone(), Array2::zeros((3, 4))));
    let err = s
        .compress(c.base.view(), c.update.view(), &res, 2)
        .unwrap_err();
    assert_eq!(
        err,
        SoftError::Shape {
            field: "residual.a",
            got: (3, 4),
            expected: (3, 5)
        }
    );
    // dense residual of the wrong shape for SLoRA
    let err = MethodKind::SLora
        .sparsifier(true, 0)
        .compress(
            c.base.view(),
            c.update.view(),
            &Residual::Dense(Array2::zeros((5, 6))),
            2,
        )
        .unwrap_err();
    assert_eq!(
        err,
        SoftError::Shape {
            field: "residual",
            got: (5, 6),
            expected: (6, 5)
        }
    );
    // empty factors
    let e = Array2::<f32>::zeros((4, 0));
    let e2 = Array2::<f32>::zeros((0, 3));
    let err = s
        .compress(
            FactorsView::new(e.view(), e2.view()),
            FactorsView::new(e.view(), e2.view()),
            &Residual::Zero,
            1,
        )
        .unwrap_err();
    assert_eq!(
        err,
        SoftError::Empty {
            field: "base.b",
            got: (4, 0)
        }
    );
    assert!(err.to_string().contains("base.b"));
}

#[test]
fn components_outside_one_to_r_are_rejected_by_every_method() {
    let c = client(2, 4, 4, 2, false);
    for kind in MethodKind::ALL {
        for m in [0, 3, usize::MAX] {
            let err = kind
                .sparsifier(true, 0)
                .compress(c.base.view(), c.update.view(), &Residual::Zero, m)
                .unwrap_err();
            assert_eq!(err, SoftError::Components { m, r: 2 }, "{kind} {m}");
        }
    }
    // Sizes from outside (a message header, Python) cannot overflow the count.
    let huge = wflora_soft::Dims {
        d: usize::MAX,
        l: usize::MAX,
        r: 1,
    };
    let err = wflora_soft::budget(huge, 1).unwrap_err().to_string();
    assert!(err.contains("overflows"), "{err}");
    let wide = wflora_soft::Dims {
        d: 1 << 60,
        l: 1,
        r: 1,
    };
    assert!(
        wflora_soft::budget(wide, 1).is_err(),
        "values × 32 overflows"
    );
    let dims = wflora_soft::Dims { d: 1, l: 1, r: 8 };
    let err = wflora_soft::budget(dims, 0).unwrap_err();
    assert_eq!(err, SoftError::Components { m: 0, r: 8 });
    assert_eq!(
        err.to_string(),
        "kept components m = 0 must be in 1..=r (r = 8)"
    );
    assert_eq!(
        wflora_soft::element_counts(dims, 9).unwrap_err(),
        SoftError::Components { m: 9, r: 8 }
    );
    assert_eq!(
        wflora_soft::slora_triplets(dims, 0).unwrap_err(),
        SoftError::Components { m: 0, r: 8 }
    );
}

#[test]
fn ratio_outside_the_unit_interval_is_rejected_by_the_conversion() {
    for rho in [
        0.0,
        -0.0,
        -0.5,
        1.5,
        1.0 + f64::EPSILON,
        f64::NAN,
        f64::INFINITY,
    ] {
        let err = wflora_soft::components_for_ratio(rho, 8).unwrap_err();
        assert!(matches!(err, SoftError::Ratio { .. }), "{rho}: {err}");
    }
    assert_eq!(
        wflora_soft::components_for_ratio(0.5, 0).unwrap_err(),
        SoftError::Rank { r: 0 }
    );
}

#[test]
fn non_finite_values_are_located() {
    for kind in MethodKind::ALL {
        for m in [2, 3] {
            let mut c = client(3, 5, 7, 3, false);
            c.update.a[[1, 4]] = f32::NAN;
            let err = kind
                .sparsifier(true, 0)
                .compress(c.base.view(), c.update.view(), &Residual::Zero, m)
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    SoftError::NonFinite {
                        field: "update.a",
                        row: 1,
                        col: 4,
                        ..
                    }
                ),
                "{kind}: {err}"
            );
            let mut c = client(3, 5, 7, 3, false);
            c.base.b[[4, 2]] = f32::NEG_INFINITY;
            let err = kind
                .sparsifier(true, 0)
                .compress(c.base.view(), c.update.view(), &Residual::Zero, m)
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    SoftError::NonFinite {
                        field: "base.b",
                        row: 4,
                        col: 2,
                        ..
                    }
                ),
                "{kind}: {err}"
            );
        }
    }
    let mut c = client(3, 5, 7, 3, true);
    if let Residual::Factors(e) = &mut c.residual {
        e.b[[0, 1]] = f32::INFINITY;
    }
    let err = importances(c.base.view(), c.update.view(), &c.residual).unwrap_err();
    assert!(
        matches!(
            err,
            SoftError::NonFinite {
                field: "residual.b",
                row: 0,
                col: 1,
                ..
            }
        ),
        "{err}"
    );
    let m = ndarray::array![[1.0f64, f64::NAN]];
    assert!(matches!(
        svd(&m),
        Err(SoftError::NonFinite { row: 0, col: 1, .. })
    ));
}

#[test]
fn residual_of_the_wrong_kind() {
    let c = client(4, 5, 4, 2, false);
    let err = MethodKind::Soft
        .sparsifier(true, 0)
        .compress(
            c.base.view(),
            c.update.view(),
            &Residual::Dense(Array2::zeros((5, 4))),
            1,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            SoftError::ResidualKind {
                method: MethodKind::Soft,
                ..
            }
        ),
        "{err}"
    );
    let err = MethodKind::SLora
        .sparsifier(true, 0)
        .compress(
            c.base.view(),
            c.update.view(),
            &Residual::Factors(Factors::zeros(wflora_soft::Dims { d: 5, l: 4, r: 2 })),
            1,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            SoftError::ResidualKind {
                method: MethodKind::SLora,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn aggregation_errors() {
    let c = client(5, 6, 5, 3, true);
    let (soft, _) = MethodKind::Soft
        .sparsifier(true, 0)
        .compress(c.base.view(), c.update.view(), &c.residual, 2)
        .unwrap();
    let (tl, _) = MethodKind::TLora
        .sparsifier(true, 0)
        .compress(c.base.view(), c.update.view(), &c.residual, 2)
        .unwrap();
    let err = aggregate(c.base.view(), &[(0.5, &soft), (0.5, &tl)]).unwrap_err();
    assert_eq!(
        err,
        SoftError::MixedMethods {
            index: 1,
            expected: MethodKind::Soft,
            got: MethodKind::TLora
        }
    );
    let err = aggregate(c.base.view(), &[(-0.1, &soft)]).unwrap_err();
    assert!(matches!(err, SoftError::Weight { index: 0, .. }));
    let err = aggregate(c.base.view(), &[(f64::NAN, &soft)]).unwrap_err();
    assert!(matches!(err, SoftError::Weight { index: 0, .. }));
    let other = client(5, 7, 5, 3, false);
    let err = aggregate(other.base.view(), &[(1.0, &soft)]).unwrap_err();
    assert_eq!(
        err,
        SoftError::MessageDims {
            index: 0,
            expected: (7, 5, 3),
            got: (6, 5, 3)
        }
    );
}

#[test]
fn corrupt_messages_are_rejected() {
    let c = client(6, 6, 5, 4, true);
    let (soft, _) = MethodKind::Soft
        .sparsifier(true, 0)
        .compress(c.base.view(), c.update.view(), &c.residual, 2)
        .unwrap();
    let json = serde_json::to_value(&soft).unwrap();
    let corrupt = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = json.clone();
        f(&mut v);
        let m: Message = serde_json::from_value(v).unwrap();
        (
            m.decode().unwrap_err(),
            aggregate(c.base.view(), &[(1.0, &m)]).unwrap_err(),
        )
    };
    // an index out of range
    let (e1, e2) = corrupt(&|v| v["payload"]["Components"]["support"]["Some"][1] = 9.into());
    assert!(matches!(e1, SoftError::MalformedMessage { .. }), "{e1}");
    assert!(matches!(e2, SoftError::MalformedMessage { .. }));
    // too few values
    let (e1, _) = corrupt(&|v| {
        v["payload"]["Components"]["a"]
            .as_array_mut()
            .unwrap()
            .pop();
    });
    assert!(matches!(e1, SoftError::MalformedMessage { .. }), "{e1}");
    // dimensions whose products overflow
    let (e1, e2) = corrupt(&|v| v["dims"]["d"] = u64::MAX.into());
    assert!(matches!(e1, SoftError::MalformedMessage { .. }), "{e1}");
    assert!(matches!(e2, SoftError::MessageDims { .. }), "{e2}");
    // a method that cannot carry this payload
    let (e1, _) = corrupt(&|v| v["method"] = "slora".into());
    assert!(matches!(e1, SoftError::MalformedMessage { .. }), "{e1}");
}

#[test]
fn bad_importances() {
    assert_eq!(
        dropped_energy(&[1.0, -1.0]).unwrap_err(),
        SoftError::Importance {
            index: 1,
            value: -1.0
        }
    );
    assert!(matches!(
        dropped_energy(&[f64::NAN]),
        Err(SoftError::Importance { index: 0, .. })
    ));
    assert_eq!(dropped_energy(&[]).unwrap(), vec![0.0]);
}
