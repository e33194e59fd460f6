//! A connection's memory of the last HTTP/1.1 head it read, so that a head with the same field
//! names in the same order is turned into a `HeaderMap` without parsing a name or hashing one.
//!
//! A backend sends the same fields, in the same order, in every response (`server`, `date`,
//! `content-type`, `content-length`, ...), and a browser does the same with its requests on a
//! connection. Building a `HeaderMap` from scratch parses every name (`HeaderName::from_bytes`)
//! and hashes it into the map: about half of the work of reading a head (docs/performance.md).
//! With the memo, a name whose bytes are those the last head had at the same position is a clone
//! of the name parsed then, and when all the names are the same, the map is a copy of the last
//! one's shape (`HeaderMap::clone`: two allocations and a copy, no hashing) with the new values
//! put in place. Any difference falls back to the ordinary build, which then becomes the memo.
//! `http` offers nothing like this, so it is written here.

use http::header::InvalidHeaderName;
use http::{HeaderMap, HeaderName, HeaderValue};

/// The most bytes of field names remembered; a head with more is remembered up to here.
const MAX_RAW: usize = 4096;

/// The most fields remembered.
const MAX_FIELDS: usize = 64;

/// The field names of the last head read on a connection, and the shape of its map.
#[derive(Debug, Default)]
pub struct FieldMemo {
    /// The last head's field names as they were sent, back to back.
    raw: Vec<u8>,
    /// For each remembered field of the last head: where its name ends in `raw`, and the name.
    names: Vec<(usize, HeaderName)>,
    /// The last map built, with every value empty, when its names were all different (so that
    /// the map's entries are its fields in order, one each).
    shape: Option<HeaderMap>,
}

impl FieldMemo {
    /// The name of a head's field number `index`, sent as `raw`. Fields are asked for in order,
    /// from 0 for each head.
    pub fn name(&mut self, index: usize, raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
        let start = match index.checked_sub(1) {
            None => 0,
            Some(before) => self.names.get(before).map_or(usize::MAX, |(end, _)| *end),
        };
        if let Some((end, name)) = self.names.get(index)
            && self.raw.get(start..*end) == Some(raw)
        {
            return Ok(name.clone());
        }
        let name = HeaderName::from_bytes(raw)?;
        // This head differs from the last one here: what the last one had from here on is
        // forgotten, and this field is remembered in its place (while the memo has room; a field
        // not remembered leaves every later one unremembered too, as `start` is then unknown).
        self.names.truncate(index);
        if self.names.len() == index
            && index < MAX_FIELDS
            && start.saturating_add(raw.len()) <= MAX_RAW
        {
            self.raw.truncate(start);
            self.raw.extend_from_slice(raw);
            self.names.push((self.raw.len(), name.clone()));
        }
        Ok(name)
    }

    /// A map of `fields` in their order, each field's value made by `value`, with hash-table
    /// room for `room` more fields (those the caller will add: inserting past the room rebuilds
    /// the table). When the names are those of the last map built, in the same order, the map is
    /// a copy of that one's shape.
    pub fn map<S, E>(
        &mut self,
        fields: &[(HeaderName, S)],
        room: usize,
        mut value: impl FnMut(&HeaderName, &S) -> Result<HeaderValue, E>,
    ) -> Result<HeaderMap, E> {
        if let Some(shape) = &self.shape
            && shape.len() == fields.len()
            && shape
                .keys()
                .zip(fields)
                .all(|(known, (name, _))| known == name)
        {
            let mut map = shape.clone();
            // One entry per field, in the fields' order: the shape's names are all different.
            for ((_, slot), (name, source)) in map.iter_mut().zip(fields) {
                *slot = value(name, source)?;
            }
            return Ok(map);
        }
        // The shape's copies keep its table size, so the room is made here once.
        let mut map = HeaderMap::with_capacity(fields.len() + room);
        for (name, source) in fields {
            map.append(name.clone(), value(name, source)?);
        }
        self.shape = (map.keys_len() == map.len() && map.len() <= MAX_FIELDS).then(|| {
            let mut shape = map.clone();
            for slot in shape.values_mut() {
                *slot = HeaderValue::from_static("");
            }
            shape
        });
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // A map built the ordinary way, for comparison.
    use crate::testing::header_map as plain;

    /// The map the memo builds for a head with these fields.
    fn through(memo: &mut FieldMemo, fields: &[(&str, &str)]) -> HeaderMap {
        let named: Vec<(HeaderName, &str)> = fields
            .iter()
            .enumerate()
            .map(|(i, (name, value))| (memo.name(i, name.as_bytes()).expect("name"), *value))
            .collect();
        memo.map(&named, 0, |_, value| HeaderValue::from_str(value))
            .expect("map")
    }

    /// Every field, in order, as the map yields them.
    fn listed(map: &HeaderMap) -> Vec<(String, String)> {
        map.iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().expect("text").to_owned()))
            .collect()
    }

    #[test]
    fn maps_and_their_copies_have_the_room_asked_for() {
        let mut memo = FieldMemo::default();
        let fields = [("host", "t"), ("accept", "a"), ("cookie", "c")];
        for round in 0..3 {
            let named: Vec<(HeaderName, &str)> = fields
                .iter()
                .enumerate()
                .map(|(i, (name, value))| (memo.name(i, name.as_bytes()).expect("name"), *value))
                .collect();
            let map = memo
                .map(&named, 6, |_, value| HeaderValue::from_str(value))
                .expect("map");
            assert!(map.capacity() >= fields.len() + 6, "round {round}");
            assert_eq!(listed(&map), listed(&plain(&fields)), "round {round}");
        }
    }

    #[test]
    fn every_head_gets_the_map_an_ordinary_build_gives() {
        let heads: &[&[(&str, &str)]] = &[
            &[("Server", "a"), ("Content-Length", "3"), ("X-Custom", "1")],
            // Same names, new values: the shape is copied.
            &[("Server", "b"), ("Content-Length", "4"), ("X-Custom", "2")],
            // As many fields, one name different; then the same names in another order.
            &[("Server", "b"), ("ETag", "4"), ("X-Custom", "2")],
            &[("X-Custom", "2"), ("Server", "b"), ("ETag", "4")],
            &[("Server", "b"), ("Content-Length", "4"), ("X-Custom", "2")],
            // Same names in another case: parsed again, same map.
            &[("server", "c"), ("content-length", "5"), ("x-custom", "3")],
            // One more field.
            &[
                ("server", "c"),
                ("content-length", "5"),
                ("x-custom", "3"),
                ("ETag", "\"e\""),
            ],
            // One fewer.
            &[("server", "d"), ("content-length", "6")],
            // A name changed in the middle.
            &[("server", "d"), ("X-Other", "x"), ("content-length", "6")],
            // Repeated names (no shape is kept for these; the map keeps both values in order).
            &[
                ("set-cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("server", "e"),
            ],
            &[
                ("set-cookie", "a=3"),
                ("Set-Cookie", "b=4"),
                ("server", "f"),
            ],
            // The same as the first one again.
            &[("Server", "a"), ("Content-Length", "3"), ("X-Custom", "1")],
            &[],
            &[("Server", "g")],
        ];
        let mut memo = FieldMemo::default();
        for fields in heads {
            let expected = plain(fields);
            let got = through(&mut memo, fields);
            assert_eq!(listed(&got), listed(&expected), "{fields:?}");
            for (name, _) in fields.iter() {
                assert_eq!(
                    got.get_all(*name).iter().collect::<Vec<_>>(),
                    expected.get_all(*name).iter().collect::<Vec<_>>(),
                    "{name} in {fields:?}"
                );
            }
        }
    }

    #[test]
    fn a_copied_shape_leaves_nothing_of_the_last_values() {
        let mut memo = FieldMemo::default();
        through(&mut memo, &[("a", "1"), ("b", "2")]);
        let second = through(&mut memo, &[("a", "3"), ("b", "4")]);
        assert_eq!(second.get("a").map(|v| v.as_bytes()), Some(&b"3"[..]));
        assert_eq!(second.get("b").map(|v| v.as_bytes()), Some(&b"4"[..]));
        assert_eq!(second.len(), 2);
    }

    #[test]
    fn an_invalid_name_is_refused_wherever_it_comes() {
        let mut memo = FieldMemo::default();
        through(&mut memo, &[("a", "1"), ("b", "2")]);
        assert!(memo.name(0, b"a").is_ok());
        assert!(memo.name(1, b"b c").is_err());
        assert!(memo.name(0, b"").is_err());
        // The memo still answers for what it knows.
        assert_eq!(memo.name(0, b"a").expect("a"), "a");
    }

    #[test]
    fn the_memo_is_bounded() {
        let mut memo = FieldMemo::default();
        let long = "x".repeat(3000);
        let names: Vec<String> = (0..100).map(|i| format!("{long}{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(memo.name(i, name.as_bytes()).expect("name"), name.as_str());
        }
        assert!(memo.raw.len() <= MAX_RAW);
        assert!(memo.names.len() <= MAX_FIELDS);
        // Asked again, every name is still right (remembered or parsed).
        for (i, name) in names.iter().enumerate() {
            assert_eq!(memo.name(i, name.as_bytes()).expect("name"), name.as_str());
        }
    }
}
