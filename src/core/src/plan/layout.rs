//! Block → (tensor, offset) map of the fused update.
//!
//! Tensor `t` of `sizes[t]` elements occupies virtual positions `[start_t, start_t + sizes[t])`
//! with `start_0 = 0` and `start_{t+1} = round_up(start_t + sizes[t], align)`. Block `b` covers
//! virtual positions `[b·B, min((b+1)·B, total))`, `B = block_elems`, a multiple of `align`, and
//! `blocks = ceil(total / B)`. The block's segments are the non-empty intersections of its range
//! with the tensors' ranges, in tensor order, starting from `first_tensor[b]`, the first tensor
//! whose range ends after `b·B`.
//!
//! Why this shape:
//! - every virtual position belongs to at most one tensor and every block range is disjoint, so
//!   every element is updated exactly once, with no atomics and no reduction;
//! - because both `start_t` and `b·B` are multiples of `align`, every segment begins at a tensor
//!   offset that is a multiple of `align`: a kernel can use `align`-wide vector loads whenever the
//!   tensor's data pointer is aligned, and handles only the segment's tail element by element;
//! - padding costs at most `align − 1` positions per tensor, so `blocks ≤ ceil((Σ sizes +
//!   n·(align − 1)) / B)`: small tensors are packed, not a block each;
//! - all positions are `u64`: a 2^31+-element tensor (or a model whose total passes 2^31) does not
//!   overflow, and the per-block table stays `u32` (a tensor index).
use crate::{Error, Result};

/// One piece of work of a block: `len` elements of tensor `tensor` from element `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Index of the tensor in the plan's order.
    pub tensor: u32,
    /// First element of the piece, counted in the tensor's (flattened, contiguous) elements.
    pub offset: u64,
    /// Number of elements of the piece (at least 1).
    pub len: u64,
}

/// The indexing of one fused update over a fixed list of tensor sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    sizes: Vec<u64>,
    starts: Vec<u64>,
    total: u64,
    block_elems: u64,
    align: u64,
    first_tensor: Vec<u32>,
}

impl Layout {
    /// Lays out `sizes` (element counts, zero allowed) in blocks of `block_elems` elements with
    /// tensor starts aligned to `align` elements.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `align` is not a power of two, `block_elems` is not a
    /// positive multiple of `align`, there are more than `u32::MAX` tensors, or the padded total
    /// does not fit in `u64`.
    pub fn new(sizes: &[u64], block_elems: u64, align: u64) -> Result<Self> {
        if !align.is_power_of_two() {
            return Err(Error::InvalidConfig {
                field: "align",
                value: align.to_string(),
                expected: "a power of two (elements per vector load)".into(),
            });
        }
        if block_elems == 0 || block_elems % align != 0 {
            return Err(Error::InvalidConfig {
                field: "block_elems",
                value: block_elems.to_string(),
                expected: format!("a positive multiple of align = {align}"),
            });
        }
        if u32::try_from(sizes.len()).is_err() {
            return Err(Error::InvalidConfig {
                field: "sizes",
                value: format!("{} tensors", sizes.len()),
                expected: format!("at most {} tensors", u32::MAX),
            });
        }
        let overflow = || Error::InvalidConfig {
            field: "sizes",
            value: "a padded total above u64::MAX elements".into(),
            expected: "a total that fits in u64".into(),
        };
        let mut starts = Vec::with_capacity(sizes.len());
        let mut next = 0u64;
        for &n in sizes {
            starts.push(next);
            let end = next.checked_add(n).ok_or_else(overflow)?;
            next = end.checked_add(align - 1).ok_or_else(overflow)? & !(align - 1);
        }
        // The last tensor's padding is not part of any block.
        let total = match (starts.last(), sizes.last()) {
            (Some(&s), Some(&n)) => s + n,
            _ => 0,
        };
        let blocks = total.div_ceil(block_elems);
        let mut first_tensor = Vec::with_capacity(usize::try_from(blocks).unwrap_or(0));
        // Two-pointer sweep: the first tensor whose range ends after the block's start.
        let mut t = 0usize;
        for b in 0..blocks {
            let lo = b * block_elems;
            while t < sizes.len() && starts[t] + sizes[t] <= lo {
                t += 1;
            }
            // t <= sizes.len() <= u32::MAX, checked above.
            first_tensor.push(t as u32);
        }
        Ok(Self {
            sizes: sizes.to_vec(),
            starts,
            total,
            block_elems,
            align,
            first_tensor,
        })
    }

    /// Number of blocks (the kernel's grid size; the CPU pass's task count).
    pub fn blocks(&self) -> u64 {
        self.first_tensor.len() as u64
    }

    /// Elements per block.
    pub fn block_elems(&self) -> u64 {
        self.block_elems
    }

    /// Alignment of every segment's tensor offset, in elements.
    pub fn align(&self) -> u64 {
        self.align
    }

    /// End of the virtual element space (sum of sizes plus inner padding).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The per-tensor element counts, in plan order.
    pub fn sizes(&self) -> &[u64] {
        &self.sizes
    }

    /// The per-tensor virtual starts (the table the kernel reads next to `first_tensor`).
    pub fn starts(&self) -> &[u64] {
        &self.starts
    }

    /// The per-block first tensor (the table the kernel reads at its start).
    pub fn first_tensor(&self) -> &[u32] {
        &self.first_tensor
    }

    /// The segments of block `b`, in tensor order; empty when `b >= blocks()`.
    pub fn segments(&self, b: u64) -> Segments<'_> {
        let (lo, hi, t) = match usize::try_from(b)
            .ok()
            .and_then(|i| self.first_tensor.get(i))
        {
            Some(&t) => {
                let lo = b * self.block_elems;
                (lo, (lo + self.block_elems).min(self.total), t as usize)
            }
            None => (0, 0, self.sizes.len()),
        };
        Segments {
            layout: self,
            lo,
            hi,
            t,
        }
    }
}

/// Iterator over one block's segments (see [`Layout::segments`]); mirrors the kernel's loop.
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    layout: &'a Layout,
    lo: u64,
    hi: u64,
    t: usize,
}

impl Iterator for Segments<'_> {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        let l = self.layout;
        while self.t < l.sizes.len() && l.starts[self.t] < self.hi {
            let t = self.t;
            self.t += 1;
            let s = l.starts[t];
            let a = self.lo.max(s);
            let e = self.hi.min(s + l.sizes[t]);
            if e > a {
                return Some(Segment {
                    tensor: t as u32,
                    offset: a - s,
                    len: e - a,
                });
            }
        }
        None
    }
}
