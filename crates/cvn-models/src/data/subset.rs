//! [`Spread`]: `n` samples of a data set taken at even steps through it, for `--train-limit`, or its
//! first `n` ([`Spread::first`]), for `predict --limit` (whose rows keep the set's indices).

use std::sync::Arc;

use super::Dataset;
use crate::error::Result;
use crate::rng::CounterRng;

/// Every `len/n`-th sample of `inner`. Why not the first `n`: an ImageFolder lists its samples class
/// by class, so its first `n` would hold only the first classes; even steps keep every class.
pub struct Spread {
    inner: Arc<dyn Dataset>,
    len: usize,
    /// The first `len` samples instead.
    first: bool,
}

impl Spread {
    /// At most `n` samples of `inner` (all of them if it has no more).
    pub fn new(inner: Arc<dyn Dataset>, n: usize) -> Self {
        let len = n.min(inner.len());
        Self { inner, len, first: false }
    }

    /// The first `n` samples of `inner` (all of them if it has no more), in order.
    pub fn first(inner: Arc<dyn Dataset>, n: usize) -> Self {
        Self { first: true, ..Self::new(inner, n) }
    }

    /// Index in `inner` of sample `index`: `⌊index · len(inner) / n⌋`, strictly increasing.
    fn source(&self, index: usize) -> usize {
        if self.first {
            return index;
        }
        (index as u128 * self.inner.len() as u128 / self.len.max(1) as u128) as usize
    }
}

impl Dataset for Spread {
    fn len(&self) -> usize {
        self.len
    }

    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }

    fn sample_shape(&self) -> [usize; 3] {
        self.inner.sample_shape()
    }

    fn load_into(&self, index: usize, rng: &mut CounterRng, out: &mut [f32]) -> Result<usize> {
        self.inner.load_into(self.source(index.min(self.len)), rng, out)
    }

    fn raw_image(&self, index: usize) -> Result<image::RgbImage> {
        self.inner.raw_image(self.source(index.min(self.len)))
    }

    fn concept_names(&self) -> &[String] {
        self.inner.concept_names()
    }

    fn concepts_of(&self, index: usize) -> Result<Vec<usize>> {
        self.inner.concepts_of(self.source(index.min(self.len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::FashionMnist;

    #[test]
    fn spread_samples_every_class_at_even_steps() {
        let test = FashionMnist::embedded().unwrap().test;
        let labels = test.labels().to_vec();
        // Sort the set by class, as an ImageFolder lists it: the first 100 would be one class.
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by_key(|&i| labels[i]);
        let by_class = Arc::new(Reordered { inner: test, order });
        let spread = Spread::new(by_class.clone(), 100);
        assert_eq!(spread.len(), 100);
        let mut rng = CounterRng::new(0, 0, 0);
        let mut out = vec![0.0; 28 * 28];
        let mut seen = [0usize; 10];
        for i in 0..spread.len() {
            seen[spread.load_into(i, &mut rng, &mut out).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&n| n >= 5), "classes seen: {seen:?}");
        assert_eq!(Spread::new(by_class.clone(), 5000).len(), by_class.len());
        // Out-of-range indices are the inner set's error, never a panic.
        assert!(Spread::new(by_class, 10).load_into(10, &mut rng, &mut out).is_err());
    }

    /// A data set listed in another order.
    struct Reordered {
        inner: crate::data::IdxDataset,
        order: Vec<usize>,
    }

    impl Dataset for Reordered {
        fn len(&self) -> usize {
            self.order.len()
        }
        fn class_names(&self) -> &[String] {
            self.inner.class_names()
        }
        fn sample_shape(&self) -> [usize; 3] {
            self.inner.sample_shape()
        }
        fn load_into(&self, index: usize, rng: &mut CounterRng, out: &mut [f32]) -> Result<usize> {
            self.inner.load_into(*self.order.get(index).unwrap_or(&usize::MAX), rng, out)
        }
        fn raw_image(&self, index: usize) -> Result<image::RgbImage> {
            self.inner.raw_image(self.order[index])
        }
    }
}
