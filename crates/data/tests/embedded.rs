//! Facts about the embedded Fashion-MNIST test split, checked against values
//! computed independently with Python's `gzip` module from the same files.
#![allow(clippy::unwrap_used)]

use wflora_data::{FASHION_MNIST_CLASSES, fashion_mnist_test};

#[test]
fn embedded_fashion_mnist_has_the_documented_shape_and_balance() {
    let d = fashion_mnist_test().unwrap();
    assert_eq!(d.len(), 10_000);
    assert_eq!((d.channels(), d.height(), d.width()), (1, 28, 28));
    assert_eq!(d.num_classes(), FASHION_MNIST_CLASSES.len());
    assert_eq!(d.class_counts(), vec![1000; 10]);
    // First labels, read with Python: gzip.open(...).read()[8:18].
    assert_eq!(&d.labels()[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
}

#[test]
fn embedded_pixels_match_an_independent_decode() {
    let d = fashion_mnist_test().unwrap();
    // Python: row 14 of image 0 as bytes, and byte sums of images 0 and 9999.
    let row14: [u8; 28] = [
        0, 0, 0, 0, 0, 0, 2, 4, 1, 0, 0, 0, 98, 136, 110, 109, 110, 162, 135, 144, 149, 159, 167,
        144, 158, 169, 119, 0,
    ];
    let img0 = d.image(0).unwrap();
    for (x, &b) in row14.iter().enumerate() {
        assert_eq!(img0[14 * 28 + x], f32::from(b) / 255.0);
    }
    let sum0: f64 = img0.iter().map(|&v| f64::from(v) * 255.0).sum();
    assert!((sum0 - 33_456.0).abs() < 1e-2);
    let sum_last: f64 = d
        .image(9999)
        .unwrap()
        .iter()
        .map(|&v| f64::from(v) * 255.0)
        .sum();
    assert!((sum_last - 24_390.0).abs() < 1e-2);
    // Python: mean 0.286849280712, population std 0.352444153261 over all pixels.
    let s = d.channel_stats().unwrap();
    assert!((f64::from(s.mean[0]) - 0.286_849_280_712).abs() < 1e-6);
    assert!((f64::from(s.std[0]) - 0.352_444_153_261).abs() < 1e-6);
}
