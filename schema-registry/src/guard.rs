//! A bounded walk over an Avro body before apache-avro decodes it (sans-IO).
//!
//! Bytes off the wire are hostile. apache-avro's own decoder bounds each
//! single allocation by its global `max_allocation_bytes` (set by
//! [`crate::AvroDeserializer`]), but not:
//!
//! - the **count** of an array or map block: `reserve(count)` of
//!   `Value`s, ~50 bytes each, from a 5-byte varint; and a block of
//!   zero-size items (`null`, an empty record) costs no input bytes at
//!   all, so a few bytes can ask for millions of values;
//! - the **depth** of a recursive schema (a linked list through a union
//!   with `null`): one byte per level, and its recursive decoder
//!   overflows the stack (an abort, not a panic);
//! - a string or boolean cut short: it decodes to `Value::Null` instead
//!   of failing; and bytes left over after the datum are ignored.
//!
//! This walk reads the body once along the writer's schema, allocating
//! nothing, and rejects the body unless every length fits in the bytes
//! that remain, every union branch and enum symbol exists, the nesting
//! stays under [`MAX_DEPTH`], the values that take no bytes stay under `2 × len + `[`ZERO_SIZE_BUDGET`],
//! and the datum ends exactly at the end of the body. After it passes,
//! decoding allocates at most a small multiple of the body's length.

use std::collections::HashMap;

use apache_avro::schema::{Name, Namespace, Schema};

/// Deepest nesting of records, arrays, maps and unions accepted. The
/// decoders recurse once per level.
pub const MAX_DEPTH: usize = 64;

/// Values that take no bytes (`null`, records, `fixed(0)`) allowed beyond
/// two per body byte: room for legitimate ones (`null`s in an array, a
/// record around every item), while a hostile block count cannot ask for
/// more.
pub const ZERO_SIZE_BUDGET: usize = 65_536;

/// Why an Avro body does not fit its writer schema. `offset` is where in
/// the body (after the 5-byte header) the walk stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at body offset {offset}")]
pub struct Corrupt {
    /// What was wrong.
    pub what: String,
    /// Byte offset into the Avro body.
    pub offset: usize,
}

type Names<'s> = HashMap<Name, &'s Schema>;

struct Walk<'b> {
    body: &'b [u8],
    pos: usize,
    values_left: usize,
}

/// Check that `body` is exactly one datum of `schema` (see the module doc).
///
/// # Errors
/// [`Corrupt`] naming the first violation and its offset.
pub fn check(schema: &Schema, body: &[u8]) -> Result<(), Corrupt> {
    let resolved = apache_avro::schema::ResolvedSchema::try_from(schema).map_err(|e| Corrupt {
        what: format!("writer schema does not resolve: {e}"),
        offset: 0,
    })?;
    let names: &Names<'_> = resolved.get_names();
    let mut walk = Walk {
        body,
        pos: 0,
        values_left: body
            .len()
            .saturating_mul(2)
            .saturating_add(ZERO_SIZE_BUDGET),
    };
    walk.value(schema, names, &None, 0)?;
    if walk.pos != body.len() {
        return Err(walk.corrupt(format!(
            "{} bytes left over after the datum",
            body.len() - walk.pos
        )));
    }
    Ok(())
}

impl Walk<'_> {
    fn corrupt(&self, what: impl Into<String>) -> Corrupt {
        Corrupt {
            what: what.into(),
            offset: self.pos,
        }
    }

    fn remaining(&self) -> usize {
        self.body.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], Corrupt> {
        if n > self.remaining() {
            return Err(self.corrupt(format!(
                "{what} needs {n} bytes, {} remain",
                self.remaining()
            )));
        }
        let s = &self.body[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A zig-zag varint of at most 10 bytes (Avro `long`).
    fn long(&mut self) -> Result<i64, Corrupt> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.body.get(self.pos) else {
                return Err(self.corrupt("varint cut short"));
            };
            self.pos += 1;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(self.corrupt("varint longer than 10 bytes"))
    }

    fn int(&mut self) -> Result<i64, Corrupt> {
        let v = self.long()?;
        if i32::try_from(v).is_err() {
            return Err(self.corrupt(format!("int {v} out of range")));
        }
        Ok(v)
    }

    /// A byte length: non-negative and within the bytes that remain.
    fn len(&mut self, what: &str) -> Result<usize, Corrupt> {
        let n = self.long()?;
        let n =
            usize::try_from(n).map_err(|_| self.corrupt(format!("negative {what} length {n}")))?;
        self.take(n, what)?;
        Ok(n)
    }

    fn spend_value(&mut self) -> Result<(), Corrupt> {
        self.values_left = self
            .values_left
            .checked_sub(1)
            .ok_or_else(|| self.corrupt("more values than the body can hold"))?;
        Ok(())
    }

    fn value(
        &mut self,
        schema: &Schema,
        names: &Names<'_>,
        ns: &Namespace,
        depth: usize,
    ) -> Result<(), Corrupt> {
        if depth > MAX_DEPTH {
            return Err(self.corrupt(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        match schema {
            Schema::Null => self.spend_value()?,
            Schema::Boolean => {
                let b = self.take(1, "boolean")?[0];
                if b > 1 {
                    return Err(self.corrupt(format!("boolean byte {b:#04x}")));
                }
            }
            Schema::Int | Schema::Date | Schema::TimeMillis => {
                self.int()?;
            }
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => {
                self.long()?;
            }
            Schema::Float => {
                self.take(4, "float")?;
            }
            Schema::Double => {
                self.take(8, "double")?;
            }
            Schema::Bytes | Schema::BigDecimal => {
                self.len("bytes")?;
            }
            Schema::String => {
                let start = self.pos;
                let n = self.len("string")?;
                if std::str::from_utf8(&self.body[self.pos - n..self.pos]).is_err() {
                    return Err(Corrupt {
                        what: "string is not UTF-8".into(),
                        offset: start,
                    });
                }
            }
            Schema::Uuid => {
                // A string in Avro 1.11, or fixed(16): both length-checked here.
                self.len("uuid")?;
            }
            Schema::Duration => {
                self.take(12, "duration")?;
            }
            Schema::Fixed(f) => {
                if f.size == 0 {
                    self.spend_value()?;
                }
                self.take(f.size, "fixed")?;
            }
            Schema::Decimal(d) => self.value(&d.inner, names, ns, depth + 1)?,
            Schema::Enum(e) => {
                let i = self.int()?;
                if usize::try_from(i).map_or(true, |i| i >= e.symbols.len()) {
                    return Err(self.corrupt(format!(
                        "enum index {i} outside its {} symbols",
                        e.symbols.len()
                    )));
                }
            }
            Schema::Union(u) => {
                let i = self.long()?;
                let Some(branch) = usize::try_from(i).ok().and_then(|i| u.variants().get(i)) else {
                    return Err(self.corrupt(format!(
                        "union branch {i} outside its {} branches",
                        u.variants().len()
                    )));
                };
                self.value(branch, names, ns, depth + 1)?;
            }
            Schema::Record(r) => {
                self.spend_value()?;
                let name = r.name.fully_qualified_name(ns);
                for field in &r.fields {
                    self.value(&field.schema, names, &name.namespace, depth + 1)?;
                }
            }
            Schema::Array(a) => self.blocks(names, ns, depth, |w, names, ns, depth| {
                w.value(&a.items, names, ns, depth + 1)
            })?,
            Schema::Map(m) => self.blocks(names, ns, depth, |w, names, ns, depth| {
                let start = w.pos;
                let n = w.len("map key")?;
                if std::str::from_utf8(&w.body[w.pos - n..w.pos]).is_err() {
                    return Err(Corrupt {
                        what: "map key is not UTF-8".into(),
                        offset: start,
                    });
                }
                w.value(&m.types, names, ns, depth + 1)
            })?,
            Schema::Ref { name } => {
                let full = name.fully_qualified_name(ns);
                let Some(target) = names.get(&full) else {
                    return Err(self.corrupt(format!("unresolved schema reference {full}")));
                };
                self.value(target, names, &full.namespace, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Array and map blocks: `count` items, a negative count followed by
    /// the block's byte size, a zero count ending the sequence.
    fn blocks<'n>(
        &mut self,
        names: &Names<'n>,
        ns: &Namespace,
        depth: usize,
        mut item: impl FnMut(&mut Self, &Names<'n>, &Namespace, usize) -> Result<(), Corrupt>,
    ) -> Result<(), Corrupt> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                let size = self.long()?;
                if usize::try_from(size).map_or(true, |s| s > self.remaining()) {
                    return Err(self.corrupt(format!("block size {size} beyond the body")));
                }
            }
            let count = count.unsigned_abs();
            // Each item takes at least one byte or one zero-size value.
            let room = self.remaining().saturating_add(self.values_left);
            if count > room as u64 {
                return Err(self.corrupt(format!(
                    "block of {count} items, more than the body can hold"
                )));
            }
            for _ in 0..count {
                item(self, names, ns, depth + 1)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(s: &str) -> Schema {
        Schema::parse_str(s).unwrap()
    }

    const ORDER: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"price","type":"double"}]}"#;

    #[test]
    fn a_valid_body_passes() {
        let body = [0x02, b'a', 0x7b, 0x14, 0xae, 0x47, 0xe1, 0xfa, 0x23, 0x40];
        assert_eq!(check(&schema(ORDER), &body), Ok(()));
    }

    #[test]
    fn short_long_and_lying_bodies_fail() {
        let s = schema(ORDER);
        let body = [0x02, b'a', 0x7b, 0x14, 0xae, 0x47, 0xe1, 0xfa, 0x23, 0x40];
        for cut in 0..body.len() {
            assert!(check(&s, &body[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = body.to_vec();
        long.push(0);
        assert!(check(&s, &long).unwrap_err().what.contains("left over"));
        // A string claiming 2^62 bytes.
        let lie = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(check(&s, &lie).is_err());
    }

    #[test]
    fn a_huge_block_of_nulls_is_refused_without_allocating() {
        let s = schema(r#"{"type":"array","items":"null"}"#);
        // count = i64::MAX / 2-ish, then the terminating 0.
        let body = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00];
        assert!(check(&s, &body)
            .unwrap_err()
            .what
            .contains("more than the body"));
        // A thousand nulls is fine.
        assert_eq!(check(&s, &[0xd0, 0x0f, 0x00]), Ok(()));
    }

    #[test]
    fn deep_recursion_is_refused() {
        let s = schema(
            r#"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#,
        );
        let mut body = vec![0x02; 10_000];
        body.push(0x00);
        assert!(check(&s, &body).unwrap_err().what.contains("deeper"));
        assert_eq!(check(&s, &[0x02, 0x02, 0x00]), Ok(()));
    }

    #[test]
    fn union_and_enum_indexes_are_checked() {
        let u = schema(r#"["null","string"]"#);
        assert!(check(&u, &[0x04]).is_err());
        assert!(check(&u, &[0x01]).is_err()); // -1
        let e = schema(r#"{"type":"enum","name":"E","symbols":["A","B"]}"#);
        assert_eq!(check(&e, &[0x02]), Ok(()));
        assert!(check(&e, &[0x04]).is_err());
    }
}
