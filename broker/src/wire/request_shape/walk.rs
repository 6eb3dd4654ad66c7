//! Walks a request's bytes along its shape without building anything, and refuses
//! any length or count that the bytes left cannot hold. The crate's decoder
//! allocates an array's capacity from the count on the wire before reading an
//! element; after this walk every count it sees is one the frame's bytes justify.

use super::schema::{RequestShape, Struct, Tag, Ty};

/// Kafka 4.4's cap on the elements of one array, whatever the bytes left.
pub const MAX_ARRAY_ELEMENTS: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("{field}: the request ends {needed} bytes early")]
    Truncated { field: &'static str, needed: usize },
    #[error("{field}: length {len} is negative")]
    NegativeLength { field: &'static str, len: i64 },
    #[error("{field}: {count} elements of at least {min_size} bytes cannot fit in the {left} bytes left")]
    ArrayTooLong {
        field: &'static str,
        count: usize,
        min_size: usize,
        left: usize,
    },
    #[error("{field}: a varint longer than 5 bytes")]
    Varint { field: &'static str },
    #[error("{field}: tagged field {tag} announces {size} bytes but its value takes {used}")]
    TagSize {
        field: &'static str,
        tag: u32,
        size: usize,
        used: usize,
    },
}

/// Where the walk is in the frame.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], ShapeError> {
        if n > self.left() {
            return Err(ShapeError::Truncated {
                field,
                needed: n - self.left(),
            });
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, ShapeError> {
        let b = self.take(field, 2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, ShapeError> {
        let b = self.take(field, 4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn uvarint(&mut self, field: &'static str) -> Result<u32, ShapeError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = self.take(field, 1)?[0];
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ShapeError::Varint { field })
    }

    /// A length or count: compact (varint of n + 1, 0 for null) in flexible versions,
    /// else a fixed-width signed length (-1 for null). None is null.
    fn length(
        &mut self,
        field: &'static str,
        flexible: bool,
        wide: bool,
    ) -> Result<Option<usize>, ShapeError> {
        let len = if flexible {
            i64::from(self.uvarint(field)?) - 1
        } else if wide {
            i64::from(self.i32(field)?)
        } else {
            i64::from(self.i16(field)?)
        };
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(ShapeError::NegativeLength { field, len: n }),
            n => Ok(Some(n as usize)),
        }
    }

    fn count(
        &mut self,
        field: &'static str,
        flexible: bool,
        min_size: usize,
    ) -> Result<usize, ShapeError> {
        let count = self.length(field, flexible, true)?.unwrap_or(0);
        let left = self.left();
        if count > MAX_ARRAY_ELEMENTS || count.saturating_mul(min_size) > left {
            return Err(ShapeError::ArrayTooLong {
                field,
                count,
                min_size,
                left,
            });
        }
        Ok(count)
    }
}

/// Checks a request body (the bytes after the request header) against its shape.
/// Bytes past the end of the shape are left alone, as the decoder leaves them.
pub fn check_body(shape: &RequestShape, version: i16, body: &[u8]) -> Result<usize, ShapeError> {
    let mut r = Reader { buf: body, pos: 0 };
    walk_struct(&mut r, shape.body, version, shape.is_flexible(version))?;
    Ok(r.pos)
}

/// Checks a request header of `header_version` (1 or 2; 0 has no client id) and
/// returns its length.
pub fn check_header(header_version: i16, frame: &[u8]) -> Result<usize, ShapeError> {
    let mut r = Reader { buf: frame, pos: 0 };
    r.take("request_header", 8)?;
    if header_version >= 1 {
        if let Some(n) = r.length("client_id", false, false)? {
            r.take("client_id", n)?;
        }
    }
    if header_version >= 2 {
        walk_tags(&mut r, "request_header", &[], 0)?;
    }
    Ok(r.pos)
}

fn walk_struct(
    r: &mut Reader,
    s: &'static Struct,
    version: i16,
    flexible: bool,
) -> Result<(), ShapeError> {
    for field in s.fields.iter().filter(|f| f.present(version)) {
        walk_ty(r, field.name, field.ty, version, flexible)?;
    }
    if flexible {
        walk_tags(r, s.name, s.tags, version)?;
    }
    Ok(())
}

fn walk_ty(
    r: &mut Reader,
    field: &'static str,
    ty: Ty,
    version: i16,
    flexible: bool,
) -> Result<(), ShapeError> {
    match ty {
        Ty::Bool | Ty::I8 | Ty::I16 | Ty::I32 | Ty::I64 | Ty::Uuid => {
            r.take(field, ty.min_size(flexible))?;
        }
        Ty::Str => {
            if let Some(n) = r.length(field, flexible, false)? {
                r.take(field, n)?;
            }
        }
        Ty::Bytes => {
            if let Some(n) = r.length(field, flexible, true)? {
                r.take(field, n)?;
            }
        }
        Ty::Int32s => {
            let n = r.count(field, flexible, 4)?;
            r.take(field, n * 4)?;
        }
        Ty::Strs => {
            let n = r.count(field, flexible, Ty::Str.min_size(flexible))?;
            for _ in 0..n {
                walk_ty(r, field, Ty::Str, version, flexible)?;
            }
        }
        Ty::Array(element) => {
            let n = r.count(field, flexible, element.min_size(version, flexible))?;
            for _ in 0..n {
                walk_struct(r, element, version, flexible)?;
            }
        }
        Ty::Nested(s) => walk_struct(r, s, version, flexible)?,
    }
    Ok(())
}

/// Tagged fields: a count, then (tag, size, value) each. Unknown tags are kept as
/// bytes by the decoder, so their size is all that matters; known ones are decoded
/// as their type, which must then take exactly the announced size.
fn walk_tags(
    r: &mut Reader,
    owner: &'static str,
    known: &'static [Tag],
    version: i16,
) -> Result<(), ShapeError> {
    let count = r.uvarint(owner)?;
    for _ in 0..count {
        let tag = r.uvarint(owner)?;
        let size = r.uvarint(owner)? as usize;
        let value = r.take(owner, size)?;
        if let Some(t) = known.iter().find(|t| t.tag == tag && version >= t.min) {
            let mut inner = Reader { buf: value, pos: 0 };
            walk_ty(&mut inner, owner, t.ty, version, true)?;
            if inner.pos != size {
                return Err(ShapeError::TagSize {
                    field: owner,
                    tag,
                    size,
                    used: inner.pos,
                });
            }
        }
    }
    Ok(())
}
