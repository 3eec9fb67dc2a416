//! A pickle *parser* with limits: opcodes become a tree of [`Value`]s, nothing is ever called.
//!
//! Hostile pickles are refused with a [`PickleError`] naming the limit, in time and memory linear in
//! the input: a declared string or bytes length may not exceed the input that remains; objects are
//! shared (`Rc`), so a memo reference costs nothing, but every object counts the objects it expands
//! to, and the pickle may build at most [`MAX_OBJECTS`] (memo blow-ups, where each entry holds the
//! previous one twice, stop there); nesting is tracked per object and limited to [`MAX_DEPTH`], and
//! the interpreter is a loop over an explicit stack (no recursion, so no stack overflow, and
//! dropping the tree recurses at most [`MAX_DEPTH`] deep).

use std::rc::Rc;

mod parser;

/// Most objects a pickle may build or expand to (strings and bytes count one per 64 bytes). A
/// resnet152 state_dict is about 12,000.
pub const MAX_OBJECTS: u64 = 1 << 21;
/// Deepest nesting of containers and calls. A state_dict nests 6 deep.
pub const MAX_DEPTH: u32 = 100;

/// Why a pickle was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickleError {
    /// A string or bytes object declares more bytes than the pickle has left.
    #[error("at byte {at} of the pickle, a {what} of {declared} bytes is declared, but only {remaining} bytes remain")]
    LengthBeyondInput {
        at: usize,
        what: &'static str,
        declared: u64,
        remaining: u64,
    },
    /// Over [`MAX_OBJECTS`] objects built, or one object expanding to more.
    #[error("the pickle builds more than {limit} objects (an object reused from the memo counts again each time; strings count one per 64 bytes); a state_dict needs a few thousand")]
    TooManyObjects { limit: u64 },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("the pickle nests objects more than {limit} deep; a state_dict nests 6 deep")]
    TooDeep { limit: u32 },
    /// Anything else: an unknown opcode, a truncated argument, an empty stack, a missing memo entry.
    #[error("at byte {at} of the pickle: {reason}")]
    Malformed { at: usize, reason: String },
}

/// A shared object of the tree.
pub type Obj = Rc<Node>;

/// One object with the size and depth of what it expands to.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    weight: u64,
    depth: u32,
}

/// What the pickle builds. Calls (`REDUCE`, `NEWOBJ`, `BUILD`) stay data.
#[derive(Debug, Clone)]
pub enum Value {
    Class { module: String, name: String },
    Int(i64),
    Float(f64),
    Unicode(String),
    Bytes(Vec<u8>),
    Bool(bool),
    None,
    Tuple(Vec<Obj>),
    List(Vec<Obj>),
    Dict(Vec<(Obj, Obj)>),
    Reduce { callable: Obj, args: Obj },
    Build { callable: Obj, args: Obj },
    PersistentLoad(Obj),
}

impl Value {
    /// The objects this one holds directly.
    fn children(&self) -> Vec<&Obj> {
        match self {
            Value::Tuple(v) | Value::List(v) => v.iter().collect(),
            Value::Dict(kv) => kv.iter().flat_map(|(k, v)| [k, v]).collect(),
            Value::Reduce { callable, args } | Value::Build { callable, args } => {
                vec![callable, args]
            }
            Value::PersistentLoad(o) => vec![o],
            _ => Vec::new(),
        }
    }

    /// What the object itself weighs, without its children.
    fn own_weight(&self) -> u64 {
        let bytes = match self {
            Value::Unicode(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Class { module, name } => module.len() + name.len(),
            _ => 0,
        };
        1 + bytes as u64 / 64
    }
}

/// Parses a whole pickle (up to its `STOP`) into its root object.
pub fn parse(data: &[u8]) -> Result<Obj, PickleError> {
    parser::Parser::new(data).run()
}

/// Adds `children` to `node`'s weight and depth, checking both limits.
pub(super) fn grow(node: &mut Node, children: &[Obj]) -> Result<(), PickleError> {
    for c in children {
        node.weight = node.weight.saturating_add(c.weight);
        node.depth = node.depth.max(c.depth.saturating_add(1));
    }
    if node.weight > MAX_OBJECTS {
        return Err(PickleError::TooManyObjects { limit: MAX_OBJECTS });
    }
    if node.depth > MAX_DEPTH {
        return Err(PickleError::TooDeep { limit: MAX_DEPTH });
    }
    Ok(())
}
