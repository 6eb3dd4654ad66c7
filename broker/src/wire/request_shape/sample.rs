//! Sample requests built from the shapes: every field present in a version gets a
//! value (arrays get `width` elements), so the decoder's round trip of a sample
//! proves a shape field by field, and the samples seed the request fuzzer.

use super::schema::{RequestShape, Struct, Ty};

/// Builds one body of `shape` at `version` whose arrays hold `width` elements and
/// whose values vary with `seed`.
pub fn body(shape: &RequestShape, version: i16, width: usize, seed: u8) -> Vec<u8> {
    let mut w = Writer {
        out: Vec::new(),
        flexible: shape.is_flexible(version),
        width,
        seed,
    };
    w.structure(shape.body, version);
    w.out
}

/// A whole frame for the wire: size prefix, request header (client id "rill-seed")
/// and a body as `body` builds it.
pub fn frame(shape: &RequestShape, version: i16, width: usize, seed: u8) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&(shape.key as i16).to_be_bytes());
    payload.extend_from_slice(&version.to_be_bytes());
    payload.extend_from_slice(&i32::from(seed).to_be_bytes());
    let client_id = b"rill-seed";
    payload.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    payload.extend_from_slice(client_id);
    if shape.key.request_header_version(version) >= 2 {
        payload.push(0);
    }
    payload.extend_from_slice(&body(shape, version, width, seed));
    let mut out = (payload.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

struct Writer {
    out: Vec<u8>,
    flexible: bool,
    width: usize,
    seed: u8,
}

impl Writer {
    fn next(&mut self) -> u8 {
        self.seed = self.seed.wrapping_mul(31).wrapping_add(7);
        self.seed
    }

    fn uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn length(&mut self, n: usize, wide: bool) {
        if self.flexible {
            self.uvarint(n as u32 + 1);
        } else if wide {
            self.out.extend_from_slice(&(n as i32).to_be_bytes());
        } else {
            self.out.extend_from_slice(&(n as i16).to_be_bytes());
        }
    }

    fn string(&mut self) {
        let text = format!("s{}", self.next() % 10);
        self.length(text.len(), false);
        self.out.extend_from_slice(text.as_bytes());
    }

    fn structure(&mut self, s: &Struct, version: i16) {
        for field in s.fields.iter().filter(|f| f.present(version)) {
            self.value(field.ty, version);
        }
        if self.flexible {
            // No tagged fields: the decoder keeps unknown ones and re-encodes known
            // ones only when set, so none keeps the round trip exact.
            self.uvarint(0);
        }
    }

    fn value(&mut self, ty: Ty, version: i16) {
        match ty {
            Ty::Bool | Ty::I8 => {
                let b = self.next() & 1;
                self.out.push(b);
            }
            Ty::I16 | Ty::I32 | Ty::I64 | Ty::Uuid => {
                let n = ty.min_size(self.flexible);
                for _ in 0..n - 1 {
                    self.out.push(0);
                }
                let last = self.next() % 100;
                self.out.push(last);
            }
            Ty::Str => self.string(),
            Ty::Bytes => {
                let n = 1 + usize::from(self.next() % 8);
                self.length(n, true);
                for _ in 0..n {
                    let b = self.next();
                    self.out.push(b);
                }
            }
            Ty::Int32s => {
                self.length(self.width, true);
                for _ in 0..self.width {
                    self.value(Ty::I32, version);
                }
            }
            Ty::Strs => {
                self.length(self.width, true);
                for _ in 0..self.width {
                    self.string();
                }
            }
            Ty::Array(element) => {
                self.length(self.width, true);
                for _ in 0..self.width {
                    self.structure(element, version);
                }
            }
            Ty::Nested(s) => self.structure(s, version),
        }
    }
}
