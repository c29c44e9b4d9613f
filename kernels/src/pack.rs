//! Recurrent weights packed once, at load, into the order the step kernels read them.

use aligned_vec::{AVec, ConstAlign};

use crate::denormal::flush;

/// Hidden units per packed block: one AVX-512 vector, two AVX2 vectors.
pub const BLOCK: usize = 16;

/// Alignment of packed weights in bytes (one cache line).
pub const ALIGN: usize = 64;

/// A `(gates * rows, cols)` weight matrix in PyTorch's layout (gate-major rows, as `W_hh`
/// `(G*H, H_out)` or `W_hr` `(P, H)` with one gate), packed in blocks of units.
///
/// The rows of every gate are cut into blocks of [`BLOCK`] units; block `j` holds, gate after
/// gate, a `cols x BLOCK` panel: for each column `k` in order, the `BLOCK` weights of that gate:
///
/// ```text
/// data[((j * gates + g) * cols + k) * BLOCK + u] = W[g * rows + j * BLOCK + u][k]
/// ```
///
/// so one pass over the input vector accumulates every gate of a block of units, reading each
/// gate's panel strictly in order (`gates` sequential streams). With one gate (`W_ih`), block `j`
/// is a single panel: the input projection's `K x 16` operand. Units past `rows` in the last
/// block are zero.
///
/// Why panels rather than the gates interleaved per `k` (one 256-byte group of lines per `k`
/// for an LSTM): a pass over some of the gates then reads one line in four at a 256-byte stride,
/// which lands in a quarter of L1's sets (and of L2's); measured on the AVX2 machine this was
/// tuned on, the interleaved layout ran the LSTM step at H1024 batch 4 about 2x slower, and
/// H256 batch 4 ~20% slower, with batch 1 unchanged.
#[derive(Clone, Debug)]
pub struct PackedMatrix {
    gates: usize,
    rows: usize,
    cols: usize,
    data: AVec<f32, ConstAlign<ALIGN>>,
}

impl PackedMatrix {
    /// Packs `w`, a row-major `(gates * rows, cols)` matrix, its denormal values flushed to
    /// `±0` (see [`crate::denormal`]: they would slow every product they enter).
    ///
    /// # Panics
    /// If `w.len() != gates * rows * cols` (callers validate shapes before packing).
    pub fn pack(w: &[f32], gates: usize, rows: usize, cols: usize) -> PackedMatrix {
        assert_eq!(
            w.len(),
            gates * rows * cols,
            "PackedMatrix::pack: weight length does not match its shape"
        );
        let blocks = rows.div_ceil(BLOCK);
        let mut data = AVec::from_iter(
            ALIGN,
            std::iter::repeat_n(0.0f32, blocks * cols * gates * BLOCK),
        );
        for j in 0..blocks {
            let units = BLOCK.min(rows - j * BLOCK);
            for k in 0..cols {
                for g in 0..gates {
                    let dst = ((j * gates + g) * cols + k) * BLOCK;
                    for u in 0..units {
                        data[dst + u] = flush(w[(g * rows + j * BLOCK + u) * cols + k]);
                    }
                }
            }
        }
        PackedMatrix {
            gates,
            rows,
            cols,
            data,
        }
    }

    /// Number of gates `G` packed in each block (one panel each).
    pub fn gates(&self) -> usize {
        self.gates
    }

    /// Rows per gate (hidden units, or projection outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns: the length of the vector the matrix multiplies.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of blocks of [`BLOCK`] units.
    pub fn blocks(&self) -> usize {
        self.rows.div_ceil(BLOCK)
    }

    /// The packed weights of block `j`: `cols * gates * BLOCK` floats.
    pub fn block(&self, j: usize) -> &[f32] {
        let len = self.cols * self.gates * BLOCK;
        &self.data[j * len..(j + 1) * len]
    }

    /// All packed weights.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Bytes of packed weights (what one step streams per batch tile).
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<f32>()
    }

    /// Unpacks back to the row-major `(gates * rows, cols)` layout (for tests and tools).
    pub fn unpack(&self) -> Vec<f32> {
        let mut w = vec![0.0f32; self.gates * self.rows * self.cols];
        for j in 0..self.blocks() {
            let units = BLOCK.min(self.rows - j * BLOCK);
            for k in 0..self.cols {
                for g in 0..self.gates {
                    let src = ((j * self.gates + g) * self.cols + k) * BLOCK;
                    for u in 0..units {
                        w[(g * self.rows + j * BLOCK + u) * self.cols + k] = self.data[src + u];
                    }
                }
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_and_pads_with_zeros() {
        for &(gates, rows, cols) in &[(4, 1, 1), (3, 17, 5), (1, 33, 2), (4, 16, 3)] {
            let w: Vec<f32> = (0..gates * rows * cols).map(|v| v as f32 + 1.0).collect();
            let p = PackedMatrix::pack(&w, gates, rows, cols);
            assert_eq!(p.unpack(), w);
            let padded = p.blocks() * BLOCK - rows;
            let zeros = p.data().iter().filter(|&&v| v == 0.0).count();
            assert_eq!(zeros, padded * cols * gates);
        }
    }
}
