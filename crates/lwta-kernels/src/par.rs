//! Fresh output buffers written chunk by chunk on rayon's threads.
//!
//! An op that returns a new tensor used to allocate it with `vec![0.0; n]`: one single-threaded
//! `memset` over the whole buffer (glibc's `calloc` must clear memory it hands out again), then the
//! kernel's pass writing every element once more. On a tensor of LWTA's bench size that `memset`
//! was 14% of a forward + backward (`perf`). [`collect_chunks`] instead zeroes each chunk right
//! before its kernel writes it, on the kernel's thread, while the chunk is in cache: no separate
//! pass over memory, no single-threaded one, and no uninitialised value is ever visible as `f32`.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// A new `len`-element vector made by `write(item, chunk)` for every chunk of `chunk_len`
/// consecutive elements (the last may be shorter), paired with `inputs`' items in order. Each
/// chunk is zeroed just before `write` gets it, so elements `write` leaves alone are 0.
///
/// Panics if `chunk_len` is 0 or `inputs` does not yield exactly one item per chunk
/// (`len.div_ceil(chunk_len)`): both are the calling kernel's arithmetic, not user input.
pub fn collect_chunks<I, W>(len: usize, chunk_len: usize, inputs: I, write: W) -> Vec<f32>
where
    I: IndexedParallelIterator,
    W: Fn(I::Item, &mut [f32]) + Sync + Send,
{
    assert!(chunk_len > 0, "collect_chunks: chunk_len is 0");
    assert_eq!(inputs.len(), len.div_ceil(chunk_len), "collect_chunks: one input item per chunk of {chunk_len} of {len} elements");
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(chunk_len).zip(inputs).for_each(|(chunk, item)| write(item, zeroed(chunk)));
    // SAFETY: the chunks cover `0..len` and `zeroed` initialised every element of each.
    unsafe { out.set_len(len) };
    out
}

/// `chunk` set to 0.0, as initialised floats.
fn zeroed(chunk: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    chunk.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just initialised, and `MaybeUninit<f32>` has `f32`'s layout.
    unsafe { &mut *(chunk as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_is_written_in_order_and_the_rest_is_zero() {
        // 10 elements in chunks of 4: items 0, 1, 2 pair with chunks [0..4), [4..8), [8..10).
        let out = collect_chunks(10, 4, (0..3usize).into_par_iter(), |i, chunk| {
            chunk[0] = i as f32 + 1.0;
            if chunk.len() > 2 {
                chunk[2] = 10.0 * chunk.len() as f32;
            }
        });
        assert_eq!(out, [1.0, 0.0, 40.0, 0.0, 2.0, 0.0, 40.0, 0.0, 3.0, 0.0]);
        assert!(collect_chunks(0, 4, (0..0usize).into_par_iter(), |_, _| unreachable!()).is_empty());
    }

    #[test]
    #[should_panic(expected = "one input item per chunk")]
    fn too_few_inputs_is_a_programming_error() {
        collect_chunks(10, 4, (0..2usize).into_par_iter(), |_, _| {});
    }
}
