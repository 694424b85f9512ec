//! TOML text to a tree of values, each with its byte span: what `schema.rs` maps onto the
//! configuration layers.
//!
//! Owns: TOML syntax (through `toml_parser`'s lexer and parser, which also decode strings
//! and numbers), TOML's rules on defining tables and keys (a key or table defined twice,
//! dotted keys reaching into a `[table]` or an inline table), and the first error's place.
//! Must not: know keel's keys (that is `schema.rs`), or hold on to the text.
//!
//! A small tree instead of serde + the `toml` crate: with those, the configuration layer
//! cost ~460 KB of keel's 700 KB binary budget; this way, ~180 KB. Only what a configuration
//! needs is kept: dates and arrays of tables (`[[x]]`) are refused with a message rather than
//! carried around unused, and a float's value is not kept (no key takes one).

use std::ops::Range;
use toml_parser::parser::{Event, EventKind, RecursionGuard, ValidateWhitespace};
use toml_parser::{ErrorSink, ParseError, Source};

/// Nesting of arrays and inline tables beyond this is refused by the parser, so neither the
/// tree builder's recursion nor the tree's drop can run out of stack (PID 1 must not crash
/// on a bad file).
const MAX_NESTING: u32 = 16;
/// The most parts a dotted key (`a.b.c`) or a table header may have, for the same reason.
const MAX_KEY_PARTS: usize = 16;

/// A value and where it was written: a byte range of the text (offset by the `base` given
/// to [`parse`], so the ranges of several files share one space).
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    span: Range<usize>,
    value: T,
}

impl<T> Spanned<T> {
    /// `value`, written at `span`.
    pub fn new(span: Range<usize>, value: T) -> Spanned<T> {
        Spanned { span, value }
    }

    /// Where the value was written.
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// The value.
    pub fn get_ref(&self) -> &T {
        &self.value
    }
}

/// A TOML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any of the four string forms, decoded.
    String(String),
    /// An integer (decimal, `0x`, `0o`, `0b`; `_` separators removed).
    Integer(i64),
    /// A float (including `inf` and `nan`). Its value is not kept: no keel key takes one,
    /// and parsing floats would cost ~12 KB of binary for an error message.
    Float,
    /// `true` or `false`.
    Boolean(bool),
    /// `[a, b]`.
    Array(Vec<Spanned<Value>>),
    /// A `[table]`, a dotted key's table, or an inline `{ table }`.
    Table(Table),
}

impl Value {
    /// The kind of value, with its article, for messages ("expected X, found an integer").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

/// How a table came to be, which decides whether it may be written to again (TOML 1.0,
/// "Table" and "Inline Table").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The document itself.
    Root,
    /// Named on the way to a header (`a` in `[a.b]`): a later `[a]` may still define it.
    Implicit,
    /// Defined by a `[header]`.
    Header,
    /// Made by a dotted key (`a.b = 1`): more dotted keys may add to it.
    Dotted,
    /// `{ ... }`: complete as written.
    Inline,
}

/// A table: keys in the order written, each with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    entries: Vec<(Spanned<String>, Spanned<Value>)>,
    origin: Origin,
}

impl Table {
    fn new(origin: Origin) -> Table {
        Table {
            entries: Vec::new(),
            origin,
        }
    }

    /// The entries, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = &(Spanned<String>, Spanned<Value>)> {
        self.entries.iter()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Spanned<Value>> {
        self.entries
            .iter()
            .find(|(k, _)| k.value == key)
            .map(|(_, v)| v)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Spanned<Value>> {
        self.entries
            .iter_mut()
            .find(|(k, _)| k.value == key)
            .map(|(_, v)| v)
    }

    /// The table under `key`, made with `origin` and `span` if there is none yet. Err when
    /// `key` holds something else.
    fn child(
        &mut self,
        key: &Spanned<String>,
        origin: Origin,
        span: Range<usize>,
    ) -> Result<&mut Spanned<Value>, TomlError> {
        if self.get(&key.value).is_none() {
            self.entries.push((
                key.clone(),
                Spanned::new(span, Value::Table(Table::new(origin))),
            ));
        }
        self.get_mut(&key.value).ok_or_else(|| TomlError {
            span: key.span(),
            message: format!("key '{}' cannot be stored", key.value),
        })
    }
}

/// A TOML syntax error, or a key or table defined twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlError {
    /// Where (offset by `base`).
    pub span: Range<usize>,
    /// What is wrong.
    pub message: String,
}

/// Keeps the first error only: after one, a recovering parser's further errors are mostly
/// its own confusion, and the first is the one to fix.
struct FirstError {
    base: usize,
    first: Option<TomlError>,
}

impl ErrorSink for FirstError {
    fn report_error(&mut self, error: ParseError) {
        if self.first.is_none() {
            self.first = Some(convert(&error, self.base));
        }
    }
}

/// toml_parser's error as one line: "description, expected `x`, `y`", at the unexpected
/// text (or its context).
fn convert(e: &ParseError, base: usize) -> TomlError {
    let mut message = e.description().to_string();
    if let Some(expected) = e.expected()
        && !expected.is_empty()
    {
        let names: Vec<String> = expected
            .iter()
            .map(|x| match x {
                toml_parser::Expected::Literal("\n") => "a newline".to_string(),
                toml_parser::Expected::Literal(l) => format!("`{l}`"),
                toml_parser::Expected::Description(d) => d.to_string(),
                _ => "something else".to_string(),
            })
            .collect();
        message.push_str(", expected ");
        message.push_str(&names.join(", "));
    }
    let span = e
        .unexpected()
        .or(e.context())
        .map_or(0..0, |s| s.start()..s.end());
    TomlError {
        span: span.start + base..span.end + base,
        message,
    }
}

/// Parse `text` into its root table; every span is offset by `base`.
pub fn parse(text: &str, base: usize) -> Result<Table, TomlError> {
    let source = Source::new(text);
    let mut errors = FirstError { base, first: None };
    let mut events: Vec<Event> = Vec::new();
    {
        let tokens = source.lex().into_vec();
        events.reserve(tokens.len());
        let mut validated = ValidateWhitespace::new(&mut events, source);
        let mut guarded = RecursionGuard::new(&mut validated, MAX_NESTING);
        toml_parser::parser::parse_document(&tokens, &mut guarded, &mut errors);
    }
    if let Some(e) = errors.first {
        return Err(e);
    }
    let mut builder = Builder {
        source,
        events: &events,
        pos: 0,
        errors,
    };
    let root = builder.document();
    match builder.errors.first {
        Some(e) => Err(e),
        None => root,
    }
}

/// Walks the parser's events (a well-formed sequence: the parser reported no error) into a
/// tree. Still written to fail softly, never to panic, on a sequence it does not expect.
struct Builder<'s, 'e> {
    source: Source<'s>,
    events: &'e [Event],
    pos: usize,
    errors: FirstError,
}

impl Builder<'_, '_> {
    fn next(&mut self) -> Option<Event> {
        let e = self.events.get(self.pos).copied();
        self.pos += 1;
        e
    }

    fn peek(&self) -> Option<EventKind> {
        self.events.get(self.pos).map(Event::kind)
    }

    /// Whitespace, and the newlines and comments TOML 1.1 allows inside inline tables (the
    /// parser has refused them wherever they are not allowed).
    fn skip_whitespace(&mut self) {
        while matches!(
            self.peek(),
            Some(EventKind::Whitespace | EventKind::Newline | EventKind::Comment)
        ) {
            self.pos += 1;
        }
    }

    fn span(&self, e: &Event) -> Range<usize> {
        let s = e.span();
        s.start() + self.errors.base..s.end() + self.errors.base
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> TomlError {
        TomlError {
            span,
            message: message.into(),
        }
    }

    /// An event that should not be here (only on a sequence the parser should not emit).
    fn unexpected(&self, e: Option<Event>) -> TomlError {
        let span = e.map_or_else(
            || {
                let end = self.source.input().len() + self.errors.base;
                end..end
            },
            |e| self.span(&e),
        );
        self.error(span, "unexpected text; check the TOML syntax here")
    }

    fn document(&mut self) -> Result<Table, TomlError> {
        let mut root = Table::new(Origin::Root);
        // The keys of the current `[header]`, from the root.
        let mut current: Vec<Spanned<String>> = Vec::new();
        while let Some(e) = self.next() {
            match e.kind() {
                EventKind::StdTableOpen => {
                    self.skip_whitespace();
                    let first = self.next();
                    let keys = match first {
                        Some(k) if k.kind() == EventKind::SimpleKey => self.key(k)?,
                        other => return Err(self.unexpected(other)),
                    };
                    self.skip_whitespace();
                    let close = self.next();
                    let end = match close {
                        Some(c) if c.kind() == EventKind::StdTableClose => self.span(&c).end,
                        other => return Err(self.unexpected(other)),
                    };
                    define_table(&mut root, &keys, self.span(&e).start..end)?;
                    current = keys;
                }
                EventKind::ArrayTableOpen => {
                    return Err(self.error(
                        self.span(&e),
                        "arrays of tables ([[...]]) are not used in keel's configuration; write [service.NAME] for each service",
                    ));
                }
                EventKind::SimpleKey => {
                    let keys = self.key(e)?;
                    let value = self.key_value_rest()?;
                    let table = table_at(&mut root, &current)?;
                    insert(table, &keys, value)?;
                }
                EventKind::Whitespace | EventKind::Comment | EventKind::Newline => {}
                _ => return Err(self.unexpected(Some(e))),
            }
        }
        Ok(root)
    }

    /// A key (`a`, `"a b"`, `a.b.c`) starting at `first`, decoded.
    fn key(&mut self, first: Event) -> Result<Vec<Spanned<String>>, TomlError> {
        let mut keys = vec![self.decode_key(&first)];
        loop {
            let before = self.pos;
            self.skip_whitespace();
            if self.peek() != Some(EventKind::KeySep) {
                self.pos = before;
                break;
            }
            self.pos += 1;
            self.skip_whitespace();
            match self.next() {
                Some(k) if k.kind() == EventKind::SimpleKey => keys.push(self.decode_key(&k)),
                other => return Err(self.unexpected(other)),
            }
            if keys.len() > MAX_KEY_PARTS {
                return Err(self.error(
                    self.span(&first),
                    format!("a key may have at most {MAX_KEY_PARTS} dotted parts"),
                ));
            }
        }
        Ok(keys)
    }

    fn decode_key(&mut self, e: &Event) -> Spanned<String> {
        let mut out = String::new();
        if let Some(raw) = self.source.get(e) {
            raw.decode_key(&mut out, &mut self.errors);
        }
        Spanned::new(self.span(e), out)
    }

    /// After a key: `= value`.
    fn key_value_rest(&mut self) -> Result<Spanned<Value>, TomlError> {
        self.skip_whitespace();
        match self.next() {
            Some(e) if e.kind() == EventKind::KeyValSep => {}
            other => return Err(self.unexpected(other)),
        }
        self.skip_whitespace();
        let e = self.next();
        self.value(e)
    }

    fn value(&mut self, e: Option<Event>) -> Result<Spanned<Value>, TomlError> {
        match e {
            Some(e) if e.kind() == EventKind::Scalar => self.scalar(&e),
            Some(e) if e.kind() == EventKind::ArrayOpen => self.array(&e),
            Some(e) if e.kind() == EventKind::InlineTableOpen => self.inline_table(&e),
            other => Err(self.unexpected(other)),
        }
    }

    fn scalar(&mut self, e: &Event) -> Result<Spanned<Value>, TomlError> {
        use toml_parser::decoder::ScalarKind;
        let span = self.span(e);
        let Some(raw) = self.source.get(e) else {
            return Err(self.unexpected(Some(*e)));
        };
        let mut text = String::new();
        let kind = raw.decode_scalar(&mut text, &mut self.errors);
        let value = match kind {
            ScalarKind::String => Value::String(text),
            ScalarKind::Boolean(b) => Value::Boolean(b),
            ScalarKind::Integer(radix) => match i64::from_str_radix(&text, radix.value()) {
                Ok(i) => Value::Integer(i),
                Err(_) => {
                    return Err(self.error(
                        span,
                        "integer out of range (a 64-bit signed integer); check the number",
                    ));
                }
            },
            // toml_parser has checked the syntax.
            ScalarKind::Float => Value::Float,
            ScalarKind::DateTime => {
                return Err(self.error(
                    span,
                    "dates and times are not used in keel's configuration; quote the value if it is text",
                ));
            }
        };
        Ok(Spanned::new(span, value))
    }

    fn array(&mut self, open: &Event) -> Result<Spanned<Value>, TomlError> {
        let mut items = Vec::new();
        loop {
            let e = self.next();
            match e.map(|e| e.kind()) {
                Some(
                    EventKind::Whitespace
                    | EventKind::Newline
                    | EventKind::Comment
                    | EventKind::ValueSep,
                ) => {}
                Some(EventKind::ArrayClose) => {
                    let end = e.map_or(0, |e| self.span(&e).end);
                    return Ok(Spanned::new(
                        self.span(open).start..end,
                        Value::Array(items),
                    ));
                }
                _ => items.push(self.value(e)?),
            }
        }
    }

    fn inline_table(&mut self, open: &Event) -> Result<Spanned<Value>, TomlError> {
        let mut table = Table::new(Origin::Inline);
        loop {
            let e = self.next();
            match e {
                Some(e)
                    if matches!(
                        e.kind(),
                        EventKind::Whitespace
                            | EventKind::Newline
                            | EventKind::Comment
                            | EventKind::ValueSep
                    ) => {}
                Some(e) if e.kind() == EventKind::SimpleKey => {
                    let keys = self.key(e)?;
                    let value = self.key_value_rest()?;
                    insert(&mut table, &keys, value)?;
                }
                Some(e) if e.kind() == EventKind::InlineTableClose => {
                    return Ok(Spanned::new(
                        self.span(open).start..self.span(&e).end,
                        Value::Table(table),
                    ));
                }
                other => return Err(self.unexpected(other)),
            }
        }
    }
}

fn duplicate(key: &Spanned<String>) -> TomlError {
    TomlError {
        span: key.span(),
        message: format!("duplicate key '{}'; each key may be set once", key.value),
    }
}

fn not_a_table(key: &Spanned<String>, v: &Value) -> TomlError {
    TomlError {
        span: key.span(),
        message: format!("'{}' is {}, not a table", key.value, v.kind()),
    }
}

/// The table in `v` (under `key`), if its origin lets it be written to from here.
fn descend<'t>(
    v: &'t mut Spanned<Value>,
    key: &Spanned<String>,
    may_extend: impl Fn(Origin) -> bool,
) -> Result<&'t mut Table, TomlError> {
    match &mut v.value {
        Value::Table(sub) => {
            if may_extend(sub.origin) {
                Ok(sub)
            } else {
                Err(duplicate(key))
            }
        }
        other => Err(not_a_table(key, other)),
    }
}

/// The table of the current `[header]` (already defined by [`define_table`]).
fn table_at<'t>(root: &'t mut Table, path: &[Spanned<String>]) -> Result<&'t mut Table, TomlError> {
    let mut t = root;
    for key in path {
        t = match t.get_mut(&key.value).map(|v| &mut v.value) {
            Some(Value::Table(sub)) => sub,
            _ => {
                return Err(TomlError {
                    span: key.span(),
                    message: format!("table '{}' is missing", key.value),
                });
            }
        };
    }
    Ok(t)
}

/// `[a.b.c]` at `span`: `a` and `b` may exist already (or are made, implicitly), `c` must
/// not have been defined before (except implicitly, by an earlier `[a.b.c.d]`).
fn define_table(
    root: &mut Table,
    keys: &[Spanned<String>],
    span: Range<usize>,
) -> Result<(), TomlError> {
    let Some((last, parents)) = keys.split_last() else {
        return Ok(());
    };
    let mut t = root;
    for key in parents {
        let child = t.child(key, Origin::Implicit, key.span())?;
        t = descend(child, key, |o| o != Origin::Inline)?;
    }
    if t.get(&last.value).is_none() {
        t.child(last, Origin::Header, span)?;
        return Ok(());
    }
    let child = t.child(last, Origin::Header, span.clone())?;
    match &mut child.value {
        Value::Table(sub) if sub.origin == Origin::Implicit => {
            sub.origin = Origin::Header;
            child.span = span;
            Ok(())
        }
        Value::Table(sub) if sub.origin == Origin::Header => Err(TomlError {
            span,
            message: format!(
                "table [{}] is defined twice; merge the two",
                keys.iter()
                    .map(|k| k.value.as_str())
                    .collect::<Vec<_>>()
                    .join(".")
            ),
        }),
        Value::Table(_) => Err(duplicate(last)),
        other => Err(not_a_table(last, other)),
    }
}

/// `a.b.c = value` in `table`: `a` and `b` are made by dotted keys or were made so before;
/// `c` must be new.
fn insert(
    table: &mut Table,
    keys: &[Spanned<String>],
    value: Spanned<Value>,
) -> Result<(), TomlError> {
    let Some((last, parents)) = keys.split_last() else {
        return Ok(());
    };
    let mut t = table;
    for key in parents {
        let child = t.child(key, Origin::Dotted, key.span())?;
        t = descend(child, key, |o| o == Origin::Dotted)?;
    }
    if t.get(&last.value).is_some() {
        return Err(duplicate(last));
    }
    t.entries.push((last.clone(), value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Table {
        parse(text, 0).unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
    }

    fn err(text: &str) -> TomlError {
        parse(text, 0).expect_err(text)
    }

    fn at<'t>(t: &'t Table, path: &str) -> &'t Spanned<Value> {
        let mut parts = path.split('.');
        let mut v = t.get(parts.next().unwrap()).unwrap();
        for p in parts {
            match v.get_ref() {
                Value::Table(sub) => v = sub.get(p).unwrap(),
                other => panic!("{p}: {other:?}"),
            }
        }
        v
    }

    #[test]
    fn values_and_their_spans() {
        let text = "a = \"x\\ty\"\nb = 'raw\\n'\nc = 0x1F\nd = -1_000\ne = 2.5\nf = true\n\
                    g = [1, \"two\", [3]]\nh = { i = 1, j.k = 2 }\nl = \"\"\"\nmulti\nline\"\"\"\n";
        let t = ok(text);
        assert_eq!(at(&t, "a").get_ref(), &Value::String("x\ty".into()));
        assert_eq!(at(&t, "b").get_ref(), &Value::String("raw\\n".into()));
        assert_eq!(at(&t, "c").get_ref(), &Value::Integer(31));
        assert_eq!(at(&t, "d").get_ref(), &Value::Integer(-1000));
        assert_eq!(at(&t, "e").get_ref(), &Value::Float);
        assert_eq!(at(&t, "f").get_ref(), &Value::Boolean(true));
        assert_eq!(at(&t, "h.j.k").get_ref(), &Value::Integer(2));
        assert_eq!(at(&t, "l").get_ref(), &Value::String("multi\nline".into()));
        let Value::Array(g) = at(&t, "g").get_ref() else {
            panic!()
        };
        assert_eq!(g.len(), 3);
        assert_eq!(&text[g[1].span()], "\"two\"");
        assert_eq!(&text[at(&t, "g").span()], "[1, \"two\", [3]]");
        assert_eq!(&text[at(&t, "h").span()], "{ i = 1, j.k = 2 }");
        assert_eq!(&text[at(&t, "d").span()], "-1_000");
        let keys: Vec<&str> = t.iter().map(|(k, _)| k.get_ref().as_str()).collect();
        assert_eq!(
            keys,
            ["a", "b", "c", "d", "e", "f", "g", "h", "l"],
            "in order"
        );
    }

    #[test]
    fn tables_headers_and_dotted_keys() {
        let text = "top = 1\n[s.a]\nx = 1\n[s.b] # c\ny.z = 2\n[s]\nw = 3\n\"q k\".v = 4\n";
        let t = ok(text);
        assert_eq!(at(&t, "s.a.x").get_ref(), &Value::Integer(1));
        assert_eq!(at(&t, "s.b.y.z").get_ref(), &Value::Integer(2));
        assert_eq!(at(&t, "s.w").get_ref(), &Value::Integer(3));
        assert_eq!(at(&t, "s.q k.v").get_ref(), &Value::Integer(4));
        assert_eq!(&text[at(&t, "s.a").span()], "[s.a]");
        assert_eq!(
            &text[at(&t, "s").span()],
            "[s]",
            "defined after being implied"
        );
        // TOML's example: tables under a dotted key's table may still be made.
        ok("[fruit]\napple.color = 'red'\n[fruit.apple.texture]\nsmooth = true\n");
    }

    #[test]
    fn redefinitions_are_refused_at_the_second_place() {
        for (text, at_offset, part) in [
            ("a = 1\na = 2\n", 6, "duplicate key 'a'"),
            ("[t]\n[t]\n", 4, "table [t] is defined twice"),
            ("[t.u]\n[t]\n[t]\n", 10, "defined twice"),
            ("[t]\nu.v = 1\n[t.u]\n", 15, "duplicate key 'u'"),
            ("[t.u]\n[t]\nu.v = 1\n", 10, "duplicate key 'u'"),
            ("t = { u = 1 }\n[t.v]\n", 15, "duplicate key 't'"),
            ("t = { u = 1 }\nt.v = 2\n", 14, "duplicate key 't'"),
            ("t = 1\n[t.u]\n", 7, "'t' is an integer, not a table"),
            ("t = { u = 1, u = 2 }\n", 13, "duplicate key 'u'"),
        ] {
            let e = err(text);
            assert_eq!(e.span.start, at_offset, "{text:?}: {e:?}");
            assert!(e.message.contains(part), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn syntax_errors_have_places() {
        for (text, at_offset) in [
            ("a = [1, 2\n", 9),
            ("a = \n", 3),
            ("a = \"unterminated\n", 17),
            ("[a\n", 2),
            ("a = 99999999999999999999\n", 4),
            ("a = 1979-05-27\n", 4),
            ("[[a]]\n", 0),
            ("a = \"\\q\"\n", 5),
            ("a = 0xG\n", 6),
        ] {
            let e = err(text);
            assert!(
                e.span.start.abs_diff(at_offset) <= 1,
                "{text:?}: {e:?} (want {at_offset})"
            );
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn spans_are_offset_by_base_and_nesting_is_bounded() {
        let t = parse("a = 1\n", 100).unwrap();
        assert_eq!(t.get("a").unwrap().span(), 104..105);
        assert_eq!(parse("a = ?\n", 100).unwrap_err().span.start, 104);
        let deep = format!("a = {}1{}\n", "[".repeat(1000), "]".repeat(1000));
        assert!(parse(&deep, 0).is_err());
        let long = format!("{} = 1\n", vec!["k"; 1000].join("."));
        assert!(parse(&long, 0).is_err());
    }
}
