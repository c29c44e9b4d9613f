//! Owned and borrowed f32 tensors: a shape and row-major data.

use std::fmt;

use crate::error::{Error, Result};

/// An owned, contiguous, row-major f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` elements, row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from its shape and data; errors if the element count differs.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        let n = checked_numel(&shape)
            .ok_or_else(|| Error::InvalidInput(format!("shape {} overflows", Shape(&shape))))?;
        if n != data.len() {
            return Err(Error::InvalidInput(format!(
                "shape {} needs {n} elements, data has {}",
                Shape(&shape),
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }

    /// Borrows the tensor.
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            shape: &self.shape,
            data: &self.data,
        }
    }
}

/// A borrowed, contiguous, row-major f32 tensor.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// The dimensions, outermost first.
    pub shape: &'a [usize],
    /// `shape.iter().product()` elements, row-major.
    pub data: &'a [f32],
}

impl<'a> TensorView<'a> {
    /// A view from its shape and data; errors if the element count differs.
    pub fn new(shape: &'a [usize], data: &'a [f32]) -> Result<TensorView<'a>> {
        match checked_numel(shape) {
            Some(n) if n == data.len() => Ok(TensorView { shape, data }),
            _ => Err(Error::InvalidInput(format!(
                "shape {} does not match {} elements of data",
                Shape(shape),
                data.len()
            ))),
        }
    }
}

/// The product of the dimensions, or `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Displays a shape as PyTorch prints it: `(2, 3, 4)`, `(5,)`, `()`.
pub struct Shape<'a>(pub &'a [usize]);

impl fmt::Display for Shape<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [] => f.write_str("()"),
            [d] => write!(f, "({d},)"),
            dims => {
                f.write_str("(")?;
                for (i, d) in dims.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{d}")?;
                }
                f.write_str(")")
            }
        }
    }
}
