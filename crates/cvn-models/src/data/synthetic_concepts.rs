//! `synthetic-concepts`: a procedurally generated RGB data set whose concepts are known, so that
//! neuron labels can be checked against the truth (issue 16). Nothing is downloaded or stored: every
//! image is drawn from a counter-based stream of `(seed, split, index)` and rendered when it is read.
//!
//! Each 32×32 image shows 1–3 copies of one object on a background. Seven concept groups, one
//! concept of each per image ([`CONCEPT_GROUPS`]): shape, colour, pattern (the object's fill), size,
//! position (the half of the image the objects are in), background and count. The class is
//! (colour, shape) — 16 classes named like `red circle` — so a classifier must represent both; the
//! other five groups are nuisances. The train, test and probe splits are independent draws.

use std::sync::Arc;

use super::transform::{Normalize, PadCropFlip};
use super::Dataset;
use crate::error::{config_err, data_err, Result};
use crate::rng::CounterRng;

/// The name of the data set for `--data` and `--probe` (`synthetic-concepts:SEED` for another seed).
pub const SYNTHETIC_CONCEPTS: &str = "synthetic-concepts";

/// Side of every image, in pixels.
pub const IMAGE_SIDE: usize = 32;
/// Classes: every (colour, shape) pair.
pub const CLASSES: usize = 16;

/// A group of mutually exclusive concepts: every image has exactly one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConceptGroup {
    pub name: &'static str,
    pub concepts: &'static [&'static str],
}

/// Indices of the groups in [`CONCEPT_GROUPS`].
pub const SHAPE: usize = 0;
pub const COLOUR: usize = 1;
pub const PATTERN: usize = 2;
pub const SIZE: usize = 3;
pub const POSITION: usize = 4;
pub const BACKGROUND: usize = 5;
pub const COUNT: usize = 6;

pub const CONCEPT_GROUPS: [ConceptGroup; 7] = [
    ConceptGroup { name: "shape", concepts: &["circle", "square", "triangle", "cross"] },
    ConceptGroup { name: "colour", concepts: &["red", "green", "blue", "yellow"] },
    ConceptGroup { name: "pattern", concepts: &["solid", "striped", "checkered"] },
    ConceptGroup { name: "size", concepts: &["small", "large"] },
    ConceptGroup { name: "position", concepts: &["left", "right"] },
    ConceptGroup { name: "background", concepts: &["black background", "gray background", "brown background"] },
    ConceptGroup { name: "count", concepts: &["one object", "two objects", "three objects"] },
];

/// Object colours, by the colour group's order.
pub const OBJECT_RGB: [[u8; 3]; 4] = [[220, 40, 40], [40, 200, 60], [50, 80, 230], [230, 210, 40]];
/// Background colours, by the background group's order; each pixel gets uniform noise of at most
/// ±[`BACKGROUND_NOISE`].
pub const BACKGROUND_RGB: [[u8; 3]; 3] = [[25, 25, 25], [128, 128, 128], [110, 70, 35]];
pub const BACKGROUND_NOISE: u8 = 10;
/// Object sides in pixels, by the size group's order.
pub const OBJECT_SIDE: [usize; 2] = [6, 10];
/// Where the pattern darkens an object, its colour is scaled by this.
const PATTERN_SHADE: f32 = 0.4;
/// The objects sit in three slots stacked in their half of the image, one object per slot.
const SLOTS: usize = 3;
const SLOT_WIDTH: usize = IMAGE_SIDE / 2;
const SLOT_HEIGHT: usize = 10;
const SLOT_TOP: usize = 1;
/// The high word of the random domain ([`CounterRng`]): keeps these draws apart from every other
/// stream of the same seed; the low word is the split.
const DOMAIN_TAG: u64 = 0x5c0c_0000;

/// The three splits, as independent draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
    Probe,
}

impl Split {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Test => "test",
            Self::Probe => "probe",
        }
    }
}

/// One image's content: the chosen concept of each group and where its objects are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scene {
    /// Per group of [`CONCEPT_GROUPS`], the index of the image's concept in that group.
    pub choices: [usize; 7],
    /// Top-left corner `(x, y)` of each object's `side × side` box.
    pub objects: Vec<(usize, usize)>,
}

impl Scene {
    /// The scene of `split`'s image `index` for `seed`.
    pub fn draw(seed: u64, split: Split, index: usize) -> Self {
        let mut rng = CounterRng::new(seed, DOMAIN_TAG << 32 | split as u64, index as u64);
        let choices: [usize; 7] = std::array::from_fn(|g| rng.below(CONCEPT_GROUPS[g].concepts.len()));
        let side = OBJECT_SIDE[choices[SIZE]];
        let mut slots: Vec<usize> = (0..SLOTS).collect();
        for i in (1..SLOTS).rev() {
            slots.swap(i, rng.below(i + 1));
        }
        let objects = slots[..choices[COUNT] + 1]
            .iter()
            .map(|&slot| {
                let x = choices[POSITION] * SLOT_WIDTH + rng.below(SLOT_WIDTH - side + 1);
                let y = SLOT_TOP + slot * SLOT_HEIGHT + rng.below(SLOT_HEIGHT - side + 1);
                (x, y)
            })
            .collect();
        Self { choices, objects }
    }

    /// The class, an index into [`class_names`]: `colour × 4 + shape`.
    pub fn class(&self) -> usize {
        self.choices[COLOUR] * CONCEPT_GROUPS[SHAPE].concepts.len() + self.choices[SHAPE]
    }

    /// The image's concepts as indices into [`concept_names`], one per group, in group order.
    pub fn concept_indices(&self) -> [usize; 7] {
        let mut offset = 0;
        std::array::from_fn(|g| {
            let index = offset + self.choices[g];
            offset += CONCEPT_GROUPS[g].concepts.len();
            index
        })
    }

    /// The object side in pixels.
    pub fn side(&self) -> usize {
        OBJECT_SIDE[self.choices[SIZE]]
    }

    /// Renders the scene; `noise` draws the background's per-pixel noise.
    fn render(&self, noise: &mut CounterRng) -> image::RgbImage {
        let bg = BACKGROUND_RGB[self.choices[BACKGROUND]];
        let spread = 2 * BACKGROUND_NOISE as usize + 1;
        let mut img = image::RgbImage::from_fn(IMAGE_SIDE as u32, IMAGE_SIDE as u32, |_, _| {
            let delta = noise.below(spread) as i32 - BACKGROUND_NOISE as i32;
            image::Rgb(bg.map(|c| (c as i32 + delta).clamp(0, 255) as u8))
        });
        let side = self.side();
        for &(x0, y0) in &self.objects {
            for v in 0..side {
                for u in 0..side {
                    if let Some(rgb) = self.object_pixel(u, v) {
                        img.put_pixel((x0 + u) as u32, (y0 + v) as u32, image::Rgb(rgb));
                    }
                }
            }
        }
        img
    }

    /// The colour of pixel `(u, v)` of an object's box, `None` outside the shape.
    pub fn object_pixel(&self, u: usize, v: usize) -> Option<[u8; 3]> {
        let side = self.side();
        let c = (side as f32 - 1.0) / 2.0;
        let (du, dv) = ((u as f32 - c).abs(), (v as f32 - c).abs());
        let inside = match CONCEPT_GROUPS[SHAPE].concepts[self.choices[SHAPE]] {
            "circle" => du * du + dv * dv <= (side as f32 / 2.0).powi(2),
            "square" => true,
            // Pointing up: row v is v + 1 pixels wide.
            "triangle" => du <= (v as f32 + 1.0) / 2.0,
            _ => du <= side as f32 / 6.0 || dv <= side as f32 / 6.0,
        };
        if !inside {
            return None;
        }
        let shaded = match CONCEPT_GROUPS[PATTERN].concepts[self.choices[PATTERN]] {
            "solid" => false,
            "striped" => (v / 2) % 2 == 1,
            _ => (u / 2 + v / 2) % 2 == 1,
        };
        let rgb = OBJECT_RGB[self.choices[COLOUR]];
        Some(if shaded { rgb.map(|c| (c as f32 * PATTERN_SHADE).round() as u8) } else { rgb })
    }
}

/// Every concept's name, group by group (the columns of the annotation matrix).
pub fn concept_names() -> Vec<String> {
    CONCEPT_GROUPS.iter().flat_map(|g| g.concepts.iter().map(|c| c.to_string())).collect()
}

/// The 16 class names, `"<colour> <shape>"`, indexed by [`Scene::class`].
pub fn class_names() -> Vec<String> {
    CONCEPT_GROUPS[COLOUR]
        .concepts
        .iter()
        .flat_map(|colour| CONCEPT_GROUPS[SHAPE].concepts.iter().map(move |shape| format!("{colour} {shape}")))
        .collect()
}

/// The sizes of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitSizes {
    pub train: usize,
    pub test: usize,
    pub probe: usize,
}

impl Default for SplitSizes {
    fn default() -> Self {
        // A probe half of 2,000 images holds about 125 of each class: more than soft-wpmi's top-k.
        Self { train: 10_000, test: 2_000, probe: 4_000 }
    }
}

/// `synthetic-concepts` → seed 0, `synthetic-concepts:SEED` → that seed, anything else → `None`
/// (not this data set). A bad seed is an error naming the spec.
pub fn parse_spec(spec: &str) -> Option<Result<u64>> {
    let rest = spec.strip_prefix(SYNTHETIC_CONCEPTS)?;
    if rest.is_empty() {
        return Some(Ok(0));
    }
    let seed = rest.strip_prefix(':')?;
    Some(
        seed.parse::<u64>()
            .or_else(|_| config_err("data", format!("`{spec}`: expected {SYNTHETIC_CONCEPTS}:SEED with SEED a whole number"))),
    )
}

/// The three splits of the set for one seed.
#[derive(Debug, Clone)]
pub struct SyntheticConcepts {
    pub train: ConceptSplit,
    pub test: ConceptSplit,
    pub probe: ConceptSplit,
}

impl SyntheticConcepts {
    pub fn new(seed: u64, sizes: SplitSizes) -> Result<Self> {
        Ok(Self {
            train: ConceptSplit::new(seed, Split::Train, sizes.train)?,
            test: ConceptSplit::new(seed, Split::Test, sizes.test)?,
            probe: ConceptSplit::new(seed, Split::Probe, sizes.probe)?,
        })
    }
}

/// One split: images rendered on demand, with their concept annotations.
#[derive(Debug, Clone)]
pub struct ConceptSplit {
    seed: u64,
    split: Split,
    len: usize,
    class_names: Arc<Vec<String>>,
    concept_names: Arc<Vec<String>>,
    normalize: Normalize,
}

impl ConceptSplit {
    pub fn new(seed: u64, split: Split, len: usize) -> Result<Self> {
        if len == 0 {
            return config_err("data", format!("{SYNTHETIC_CONCEPTS} {} split: at least 1 image", split.name()));
        }
        // Centred on mid-grey with a quarter of the range as the scale (fixed, not measured).
        let normalize = Normalize::new(vec![0.5; 3], vec![0.25; 3])?;
        Ok(Self { seed, split, len, class_names: Arc::new(class_names()), concept_names: Arc::new(concept_names()), normalize })
    }

    /// Which split and seed, in words (`synthetic-concepts:0 probe`).
    pub fn describe(&self) -> String {
        format!("{SYNTHETIC_CONCEPTS}:{} {} split", self.seed, self.split.name())
    }

    /// The scene of image `index`.
    pub fn scene(&self, index: usize) -> Result<Scene> {
        if index >= self.len {
            return data_err(self.describe(), format!("image {index} out of range (the split has {})", self.len));
        }
        Ok(Scene::draw(self.seed, self.split, index))
    }

    fn render(&self, index: usize) -> Result<image::RgbImage> {
        let scene = self.scene(index)?;
        // The noise stream is the scene's stream in the next domain of the same family.
        let mut noise = CounterRng::new(self.seed, DOMAIN_TAG << 32 | (self.split as u64 + 3), index as u64);
        Ok(scene.render(&mut noise))
    }
}

impl Dataset for ConceptSplit {
    fn len(&self) -> usize {
        self.len
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn sample_shape(&self) -> [usize; 3] {
        [3, IMAGE_SIDE, IMAGE_SIDE]
    }

    /// No augmentation: a flip would swap `left` and `right`, a crop move objects out of their half.
    fn load_into(&self, index: usize, rng: &mut CounterRng, out: &mut [f32]) -> Result<usize> {
        let img = self.render(index)?;
        let plane = IMAGE_SIDE * IMAGE_SIDE;
        let mut chw = vec![0u8; 3 * plane];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                chw[c * plane + i] = p.0[c];
            }
        }
        PadCropFlip::default().apply(&chw, self.sample_shape(), &self.normalize, rng, out);
        Ok(self.scene(index)?.class())
    }

    fn raw_image(&self, index: usize) -> Result<image::RgbImage> {
        self.render(index)
    }

    /// The 21 concepts of the groups ([`concept_names`]).
    fn concept_names(&self) -> &[String] {
        &self.concept_names
    }

    fn concepts_of(&self, index: usize) -> Result<Vec<usize>> {
        Ok(self.scene(index)?.concept_indices().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(seed: u64, split: Split) -> ConceptSplit {
        ConceptSplit::new(seed, split, 200).unwrap()
    }

    fn bytes(set: &ConceptSplit) -> Vec<u8> {
        (0..set.len()).flat_map(|i| set.raw_image(i).unwrap().into_raw()).collect()
    }

    #[test]
    fn same_seed_same_bytes_other_seed_or_split_other_bytes() {
        let a = bytes(&split(7, Split::Train));
        assert_eq!(a, bytes(&split(7, Split::Train)));
        assert_ne!(a, bytes(&split(8, Split::Train)));
        assert_ne!(a, bytes(&split(7, Split::Probe)));
        let mut out = vec![0.0; 3 * 32 * 32];
        let set = split(7, Split::Train);
        let label = set.load_into(5, &mut CounterRng::new(1, 2, 3), &mut out).unwrap();
        let mut again = vec![0.0; out.len()];
        assert_eq!(set.load_into(5, &mut CounterRng::new(9, 9, 9), &mut again).unwrap(), label);
        assert_eq!(out, again, "loading draws nothing from the generator");
    }

    #[test]
    fn every_concept_occurs_and_classes_follow_colour_and_shape() {
        let set = ConceptSplit::new(0, Split::Train, 2000).unwrap();
        let mut seen = vec![0usize; concept_names().len()];
        for i in 0..set.len() {
            let scene = set.scene(i).unwrap();
            scene.concept_indices().iter().for_each(|&c| seen[c] += 1);
            let name = &set.class_names()[scene.class()];
            let (colour, shape) =
                (CONCEPT_GROUPS[COLOUR].concepts[scene.choices[COLOUR]], CONCEPT_GROUPS[SHAPE].concepts[scene.choices[SHAPE]]);
            assert_eq!(*name, format!("{colour} {shape}"));
            assert_eq!(scene.objects.len(), scene.choices[COUNT] + 1);
        }
        // Each concept of a group of g holds about 1/g of the images (at least 60% of that).
        let mut offset = 0;
        for g in CONCEPT_GROUPS {
            for c in 0..g.concepts.len() {
                assert!(seen[offset + c] * g.concepts.len() * 10 > set.len() * 6, "{} {:?}", g.concepts[c], seen);
            }
            offset += g.concepts.len();
        }
        assert_eq!(set.class_names().len(), 16);
    }

    /// Renders scenes chosen by hand and checks their pixels against their annotations.
    #[test]
    fn rendered_pixels_match_the_annotations() {
        let set = ConceptSplit::new(3, Split::Probe, 500).unwrap();
        for i in 0..set.len() {
            let scene = set.scene(i).unwrap();
            let img = set.raw_image(i).unwrap();
            let side = scene.side();
            let rgb = OBJECT_RGB[scene.choices[COLOUR]];
            let dark = rgb.map(|c| (c as f32 * PATTERN_SHADE).round() as u8);
            let half = scene.choices[POSITION] * SLOT_WIDTH;
            let mut object_pixels = 0;
            for &(x, y) in &scene.objects {
                // The object lies in its half, and its centre pixel has its colour.
                assert!(x >= half && x + side <= half + SLOT_WIDTH && y + side <= IMAGE_SIDE, "image {i}: {scene:?}");
                let centre = img.get_pixel((x + side / 2) as u32, (y + side / 2) as u32).0;
                match CONCEPT_GROUPS[PATTERN].concepts[scene.choices[PATTERN]] {
                    "solid" => assert_eq!(centre, rgb, "image {i}"),
                    _ => assert!(centre == rgb || centre == dark, "image {i}: {centre:?}"),
                }
                object_pixels += (0..side * side).filter(|k| scene.object_pixel(k % side, k / side).is_some()).count();
            }
            // Elsewhere: the background colour within its noise.
            let bg = BACKGROUND_RGB[scene.choices[BACKGROUND]];
            let inside = |px: usize, py: usize| {
                scene.objects.iter().any(|&(x, y)| {
                    (x..x + side).contains(&px) && (y..y + side).contains(&py) && scene.object_pixel(px - x, py - y).is_some()
                })
            };
            let mut background_pixels = 0;
            for (px, py, p) in img.enumerate_pixels() {
                if !inside(px as usize, py as usize) {
                    background_pixels += 1;
                    assert!(p.0.iter().zip(bg).all(|(&v, b)| v.abs_diff(b) <= BACKGROUND_NOISE), "image {i} pixel ({px}, {py}): {:?}", p.0);
                }
            }
            assert_eq!(background_pixels + object_pixels, IMAGE_SIDE * IMAGE_SIDE, "image {i}: objects do not overlap");
            // Counting objects: the other half of the image holds none.
            let other = (1 - scene.choices[POSITION]) * SLOT_WIDTH;
            assert!((0..IMAGE_SIDE).all(|py| (other..other + SLOT_WIDTH).all(|px| !inside(px, py))));
        }
    }

    #[test]
    fn shapes_are_what_their_names_say() {
        let scene = |shape: usize, size: usize| Scene { choices: [shape, 0, 0, size, 0, 0, 0], objects: vec![(0, 0)] };
        let mask =
            |s: &Scene| -> Vec<bool> { (0..s.side() * s.side()).map(|k| s.object_pixel(k % s.side(), k / s.side()).is_some()).collect() };
        let large = 1;
        let [circle, square, triangle, cross] = [0, 1, 2, 3].map(|s| mask(&scene(s, large)));
        assert!(square.iter().all(|&b| b));
        // The circle misses the box's corners, keeps its edge midpoints.
        assert!(!circle[0] && !circle[99] && circle[4] && circle[40]);
        // The triangle points up: narrow top row, full bottom row.
        assert_eq!(triangle[..10].iter().filter(|&&b| b).count(), 2);
        assert!(triangle[90..].iter().all(|&b| b));
        // The cross: both bars through the centre, no corners.
        assert!(!cross[0] && cross[4] && cross[40] && cross[45]);
        // Striped: shading alternates every two rows.
        let striped = Scene { choices: [1, 0, 1, 1, 0, 0, 0], objects: vec![(0, 0)] };
        assert_eq!(striped.object_pixel(0, 0), Some(OBJECT_RGB[0]));
        assert_ne!(striped.object_pixel(0, 2), Some(OBJECT_RGB[0]));
    }

    #[test]
    fn specs_and_bad_sizes() {
        assert_eq!(parse_spec("synthetic-concepts").unwrap().unwrap(), 0);
        assert_eq!(parse_spec("synthetic-concepts:42").unwrap().unwrap(), 42);
        assert!(parse_spec("synthetic-concepts:x").unwrap().unwrap_err().to_string().contains("synthetic-concepts:SEED"));
        assert!(parse_spec("data/synthetic-concepts").is_none() && parse_spec("synthetic-conceptsX").is_none());
        assert!(ConceptSplit::new(0, Split::Test, 0).is_err());
        let err = split(0, Split::Test).scene(200).unwrap_err().to_string();
        assert!(err.contains("synthetic-concepts:0 test split") && err.contains("out of range"), "{err}");
    }
}
