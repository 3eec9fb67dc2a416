//! The transforms of Winograd F(2x2, 3x3) and F(4x4, 3x3) (Lavin and Gray, 2016): filter
//! (`G g G^T`, at load, in f64), input (`B^T d B`) and output (`A^T m A`), over 8-lane vectors.
//!
//! An `m x m` output tile is computed from the `(m + 2) x (m + 2)` input patch around it with
//! `(m + 2)^2` multiplies per channel pair instead of `9 m^2`: 2.25x fewer for F(2x2), 4x fewer
//! for F(4x4), whose larger constants (up to 8 in `A`, 5 in `B`, 1/24 in `G`) cost some f32 accuracy.

#![allow(clippy::needless_range_loop)] // small tiles: the indices are the transform's rows and columns

use super::super::driver::Shared;
use super::super::layout::BLOCK;

/// Positions of the largest transform, F(4x4)'s 6x6.
pub(super) const MAX_POSITIONS: usize = 36;

/// Eight lanes of one pixel.
pub(super) type V8 = [f32; BLOCK];

/// Which Winograd transform a layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// F(2x2, 3x3): 4x4 patches, 16 positions.
    F2,
    /// F(4x4, 3x3): 6x6 patches, 36 positions.
    F4,
}

impl Variant {
    /// Output tile side.
    pub(super) fn m(self) -> usize {
        match self {
            Variant::F2 => 2,
            Variant::F4 => 4,
        }
    }

    /// Positions of a transformed tile.
    pub(super) fn positions(self) -> usize {
        (self.m() + 2) * (self.m() + 2)
    }

    /// `G g G^T` of one 3x3 filter, row-major over the positions (the first
    /// [`Variant::positions`] of the array).
    pub(super) fn transform_filter(self, g: [[f64; 3]; 3]) -> [f64; MAX_POSITIONS] {
        let mut out = [0f64; MAX_POSITIONS];
        match self {
            Variant::F2 => out[..16].copy_from_slice(filter2d::<4>(g, g2).as_flattened()),
            Variant::F4 => out.copy_from_slice(filter2d::<6>(g, g4).as_flattened()),
        }
        out
    }

    /// The 3x3 filter back from its transform (to rounding).
    pub(super) fn untransform_filter(self, u: &[f64]) -> [[f64; 3]; 3] {
        match self {
            Variant::F2 => unfilter2d::<4>(u, |v| [v[0], 2.0 * v[1] - v[0] - v[3], v[3]]),
            // From u0 = g0 / 4, u1 = -(g0 + g1 + g2) / 6, u5 = g2.
            Variant::F4 => unfilter2d::<6>(u, |v| {
                let (g0, g2) = (4.0 * v[0], v[5]);
                [g0, -6.0 * v[1] - g0 - g2, g2]
            }),
        }
    }

    /// The input transform of one input block's plane; see [`input_plane`].
    #[inline(always)]
    pub(super) fn input_plane(self, job: &InputPlane) {
        match self {
            Variant::F2 => input_plane::<4>(job, bt4),
            Variant::F4 => input_plane::<6>(job, bt6),
        }
    }
}

/// `G v` for F(2x2): `G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]`.
fn g2(v: [f64; 3]) -> [f64; 4] {
    [
        v[0],
        (v[0] + v[1] + v[2]) / 2.0,
        (v[0] - v[1] + v[2]) / 2.0,
        v[2],
    ]
}

/// `G v` for F(4x4): `G = [[1/4, 0, 0], [-1/6, -1/6, -1/6], [-1/6, 1/6, -1/6],
/// [1/24, 1/12, 1/6], [1/24, -1/12, 1/6], [0, 0, 1]]`.
fn g4(v: [f64; 3]) -> [f64; 6] {
    [
        v[0] / 4.0,
        -(v[0] + v[1] + v[2]) / 6.0,
        -(v[0] - v[1] + v[2]) / 6.0,
        v[0] / 24.0 + v[1] / 12.0 + v[2] / 6.0,
        v[0] / 24.0 - v[1] / 12.0 + v[2] / 6.0,
        v[2],
    ]
}

/// `G g G^T`: `G` over each column, then over each row.
fn filter2d<const T: usize>(g: [[f64; 3]; 3], gv: fn([f64; 3]) -> [f64; T]) -> [[f64; T]; T] {
    let mut gg = [[0f64; 3]; T];
    for c in 0..3 {
        let col = gv([g[0][c], g[1][c], g[2][c]]);
        for r in 0..T {
            gg[r][c] = col[r];
        }
    }
    std::array::from_fn(|r| gv(gg[r]))
}

/// The inverse of [`filter2d`] given the inverse `back` of `G` on three of its rows.
fn unfilter2d<const T: usize>(u: &[f64], back: fn([f64; T]) -> [f64; 3]) -> [[f64; 3]; 3] {
    let half: [[f64; 3]; T] = std::array::from_fn(|r| back(std::array::from_fn(|c| u[r * T + c])));
    let mut g = [[0f64; 3]; 3];
    for c in 0..3 {
        let col = back(std::array::from_fn(|r| half[r][c]));
        for r in 0..3 {
            g[r][c] = col[r];
        }
    }
    g
}

/// `B^T d` for F(2x2): `B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`.
#[inline(always)]
fn bt4(d: [V8; 4]) -> [V8; 4] {
    let mut t = [[0f32; BLOCK]; 4];
    for l in 0..BLOCK {
        t[0][l] = d[0][l] - d[2][l];
        t[1][l] = d[1][l] + d[2][l];
        t[2][l] = d[2][l] - d[1][l];
        t[3][l] = d[1][l] - d[3][l];
    }
    t
}

/// `B^T d` for F(4x4): `B^T = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
/// [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]`.
#[inline(always)]
fn bt6(d: [V8; 6]) -> [V8; 6] {
    let mut t = [[0f32; BLOCK]; 6];
    for l in 0..BLOCK {
        let (d0, d1, d2, d3, d4, d5) = (d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]);
        let (a, b) = (d4 - 4.0 * d2, d3 - 4.0 * d1);
        let (c, e) = (d4 - d2, 2.0 * (d3 - d1));
        t[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        t[1][l] = a + b;
        t[2][l] = a - b;
        t[3][l] = c + e;
        t[4][l] = c - e;
        t[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    t
}

/// `A^T m` for F(2x2): `A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]`.
#[inline(always)]
pub(super) fn at4(m: [V8; 4]) -> [V8; 2] {
    let mut y = [[0f32; BLOCK]; 2];
    for l in 0..BLOCK {
        y[0][l] = m[0][l] + m[1][l] + m[2][l];
        y[1][l] = m[1][l] - m[2][l] - m[3][l];
    }
    y
}

/// `A^T m` for F(4x4): `A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
/// [0, 1, -1, 8, -8, 1]]`.
#[inline(always)]
pub(super) fn at6(m: [V8; 6]) -> [V8; 4] {
    let mut y = [[0f32; BLOCK]; 4];
    for l in 0..BLOCK {
        let (s12, d12) = (m[1][l] + m[2][l], m[1][l] - m[2][l]);
        let (s34, d34) = (m[3][l] + m[4][l], m[3][l] - m[4][l]);
        y[0][l] = m[0][l] + s12 + s34;
        y[1][l] = d12 + 2.0 * d34;
        y[2][l] = s12 + 4.0 * s34;
        y[3][l] = d12 + 8.0 * d34 + m[5][l];
    }
    y
}

/// One input block's plane (`h x w` pixels of 8 channels) and where its transform goes: `v`, the
/// block's tiles in the first position plane, `th x tw` tiles of 8 values, the next position
/// `pos_stride` further on. Only the job's own call writes those tiles.
pub(super) struct InputPlane<'a> {
    pub(super) x: &'a [f32],
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) th: usize,
    pub(super) tw: usize,
    pub(super) v: Shared,
    pub(super) pos_stride: usize,
}

/// The input transform of one input block's plane into the `T * T` position planes of that
/// block. Tile `(ty, tx)` reads the `T x T` patch at `((T - 2) ty - 1, (T - 2) tx - 1)`, zero
/// outside the plane.
#[inline(always)]
fn input_plane<const T: usize>(job: &InputPlane, bt: fn([V8; T]) -> [V8; T]) {
    let InputPlane {
        x,
        h,
        w,
        th,
        tw,
        v,
        pos_stride,
    } = *job;
    let m = T - 2;
    let at = |y: isize, xx: isize| -> V8 {
        if y < 0 || xx < 0 || y as usize >= h || xx as usize >= w {
            return [0.0; BLOCK];
        }
        let i = (y as usize * w + xx as usize) * BLOCK;
        let mut p = [0.0; BLOCK];
        p.copy_from_slice(&x[i..i + BLOCK]);
        p
    };
    for ty in 0..th {
        for tx in 0..tw {
            let (y0, x0) = ((m * ty) as isize - 1, (m * tx) as isize - 1);
            // Columns of the patch, each transformed over its rows, then the rows over columns.
            let cols: [[V8; T]; T] = std::array::from_fn(|c| {
                bt(std::array::from_fn(|r| {
                    at(y0 + r as isize, x0 + c as isize)
                }))
            });
            let t = ty * tw + tx;
            for r in 0..T {
                let row = bt(std::array::from_fn(|c| cols[c][r]));
                for (c, vals) in row.iter().enumerate() {
                    // SAFETY: position `r * T + c`, tile `t` is inside `v` (the caller sized it),
                    // and only this call writes this block's tiles.
                    unsafe {
                        let dst = v.get().add((r * T + c) * pos_stride + t * BLOCK);
                        std::ptr::copy_nonoverlapping(vals.as_ptr(), dst, BLOCK);
                    }
                }
            }
        }
    }
}
