//! The vocabulary for describing a request's layout: just enough of Kafka's message
//! schema language (fields, the versions they exist in, their wire types, tagged
//! fields) to walk a request's bytes and to build sample requests from it.

use kafka_protocol::messages::ApiKey;

/// The highest version, for fields that exist in every version from their first.
pub const ALL: i16 = i16::MAX;

/// A wire type. Strings, bytes and arrays are compact (varint length + 1) in flexible
/// versions and fixed-width lengths before; `-1` (or a compact 0) is null for all of
/// them, which the crate then refuses where the field is not nullable.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Bool,
    I8,
    I16,
    I32,
    I64,
    Uuid,
    /// A string (i16 length, or compact).
    Str,
    /// Bytes or records (i32 length, or compact).
    Bytes,
    /// An array of structs.
    Array(&'static Struct),
    /// An array of i32.
    Int32s,
    /// An array of strings.
    Strs,
    /// A struct in place (only as a tagged field).
    Nested(&'static Struct),
}

/// A field and the versions it exists in.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub min: i16,
    pub max: i16,
    pub ty: Ty,
}

/// A known tagged field: decoded by the crate as its type, so its bytes are checked
/// the same way and must fill exactly the size the tag announces.
#[derive(Debug)]
pub struct Tag {
    pub tag: u32,
    pub min: i16,
    pub ty: Ty,
}

#[derive(Debug)]
pub struct Struct {
    pub name: &'static str,
    pub fields: &'static [Field],
    pub tags: &'static [Tag],
}

/// One API's request body, and the first version that uses the flexible encoding
/// (`ALL` when none does).
#[derive(Debug)]
pub struct RequestShape {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
    pub flexible: i16,
    pub body: &'static Struct,
}

/// A field present from `min` to `max` inclusive.
pub const fn f(name: &'static str, min: i16, max: i16, ty: Ty) -> Field {
    Field { name, min, max, ty }
}

impl Field {
    pub fn present(&self, version: i16) -> bool {
        (self.min..=self.max).contains(&version)
    }
}

impl Struct {
    pub const fn new(name: &'static str, fields: &'static [Field]) -> Struct {
        Struct {
            name,
            fields,
            tags: &[],
        }
    }

    /// The fewest bytes one element of this struct takes at `version`: an array count
    /// above the bytes left divided by this cannot be real.
    pub fn min_size(&self, version: i16, flexible: bool) -> usize {
        let fields: usize = self
            .fields
            .iter()
            .filter(|f| f.present(version))
            .map(|f| f.ty.min_size(flexible))
            .sum();
        let tags = usize::from(flexible);
        (fields + tags).max(1)
    }
}

impl Ty {
    pub fn min_size(self, flexible: bool) -> usize {
        match self {
            Ty::Bool | Ty::I8 => 1,
            Ty::I16 => 2,
            Ty::I32 => 4,
            Ty::I64 => 8,
            Ty::Uuid => 16,
            // Only ever a tagged field, which min_size does not count.
            Ty::Nested(_) => 1,
            Ty::Str if !flexible => 2,
            Ty::Bytes | Ty::Array(_) | Ty::Int32s | Ty::Strs if !flexible => 4,
            // A compact length is at least one varint byte.
            Ty::Str | Ty::Bytes | Ty::Array(_) | Ty::Int32s | Ty::Strs => 1,
        }
    }
}

impl RequestShape {
    pub fn is_flexible(&self, version: i16) -> bool {
        version >= self.flexible
    }

    pub fn covers(&self, version: i16) -> bool {
        (self.min..=self.max).contains(&version)
    }
}
