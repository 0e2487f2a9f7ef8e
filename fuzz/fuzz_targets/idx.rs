//! The IDX reader (plain and gzip) and the Fashion-MNIST pairing of images and labels.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into an image file and a label file.
    let split = data.first().map_or(0, |&b| b as usize).min(data.len().saturating_sub(1));
    let (images, labels) = data.get(1..).unwrap_or_default().split_at(split.min(data.len().saturating_sub(1)));
    let parsed = (cvn_models::data::parse_idx(images, "images"), cvn_models::data::parse_idx(labels, "labels"));
    if let (Ok(images), Ok(labels)) = parsed {
        if let Ok(set) = cvn_models::data::IdxDataset::new("fuzz", images, labels) {
            use cvn_models::data::Dataset;
            for i in 0..set.len().min(4) {
                let _ = set.raw_image(i);
            }
        }
    }
});
