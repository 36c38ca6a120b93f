//! `rookery batch --generate-demo ROWS --output FILE`: the input of docs/peers.md's
//! scoring workload at any size, ten standard normal features `x1..x10`, from a fixed
//! seed, so a benchmark file can be made again byte for byte.
//!
//! The numbers come from xoshiro256++ seeded by splitmix64 (seed 42) through the
//! Box-Muller transform, not from R's generator: same distribution, not R's stream.
//! Written in chunks (memory stays one chunk), through `write` (`.partial`, then
//! renamed). Owns nothing else.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

use super::format::Format;
use super::write::OutputFile;

const SEED: u64 = 42;
const FEATURES: usize = 10;
const CHUNK: usize = 65_536;

/// xoshiro256++, seeded from one word by splitmix64.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Two independent standard normals.
    fn normal_pair(&mut self) -> (f64, f64) {
        let r = (-2.0 * self.uniform().ln()).sqrt();
        let theta = std::f64::consts::TAU * self.uniform();
        (r * theta.cos(), r * theta.sin())
    }
}

fn schema() -> Arc<Schema> {
    let fields = (1..=FEATURES).map(|i| Field::new(format!("x{i}"), DataType::Float64, false));
    Arc::new(Schema::new(fields.collect::<Vec<_>>()))
}

/// Row-major draws, so the first rows of a bigger file equal a smaller file's.
fn chunk(rng: &mut Rng, rows: usize, schema: &Arc<Schema>) -> Result<RecordBatch, String> {
    let mut columns: Vec<Vec<f64>> = (0..FEATURES).map(|_| Vec::with_capacity(rows)).collect();
    for _ in 0..rows {
        for pair in columns.chunks_mut(2) {
            let (a, b) = rng.normal_pair();
            pair[0].push(a);
            if let Some(c) = pair.get_mut(1) {
                c.push(b);
            }
        }
    }
    let arrays = columns
        .into_iter()
        .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef);
    RecordBatch::try_new(schema.clone(), arrays.collect()).map_err(|e| e.to_string())
}

/// Writes `rows` demo rows to `path`.
pub fn generate(rows: u64, path: &Path, format: Format) -> Result<(), String> {
    let schema = schema();
    let mut out = OutputFile::create(path, format, schema.clone())?;
    let mut rng = Rng::new(SEED);
    let mut left = rows;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        out.write(&chunk(&mut rng, n, &schema)?)?;
        left -= n as u64;
    }
    out.finish(true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_fixed_and_look_normal() {
        let schema = schema();
        let a = chunk(&mut Rng::new(SEED), 20_000, &schema).unwrap();
        let b = chunk(&mut Rng::new(SEED), 20_000, &schema).unwrap();
        assert_eq!(a, b);
        let x = a.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
        let n = x.len() as f64;
        let mean = x.values().iter().sum::<f64>() / n;
        let var = x.values().iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.05, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }
}
