//! The opcode interpreter: a loop over an explicit stack, no recursion, every limit checked.

use std::collections::HashMap;
use std::rc::Rc;

use super::{grow, Node, Obj, PickleError, Value, MAX_OBJECTS};

pub(super) struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where the current opcode starts, for errors.
    at: usize,
    stack: Vec<Obj>,
    /// The stack's length at each open `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u32, Obj>,
    built: u64,
}

impl<'a> Parser<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Parser {
            data,
            pos: 0,
            at: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            built: 0,
        }
    }

    /// Runs opcodes up to `STOP`.
    pub fn run(mut self) -> Result<Obj, PickleError> {
        loop {
            if let Some(root) = self.step()? {
                return Ok(root);
            }
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            at: self.at,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(self.malformed("truncated: the pickle ends inside an opcode's argument"));
        };
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn uint(&mut self, n: usize) -> Result<u64, PickleError> {
        let b = self.take(n)?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// `declared` bytes of a `what`, refused before allocating if the input has fewer left.
    fn sized(&mut self, what: &'static str, declared: u64) -> Result<&[u8], PickleError> {
        let remaining = (self.data.len() - self.pos) as u64;
        if declared > remaining {
            return Err(PickleError::LengthBeyondInput {
                at: self.at,
                what,
                declared,
                remaining,
            });
        }
        self.take(declared as usize)
    }

    fn string(&mut self, declared: u64) -> Result<String, PickleError> {
        let bytes = self.sized("string", declared)?.to_vec();
        String::from_utf8(bytes).map_err(|_| self.malformed("a string is not valid UTF-8"))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.malformed("truncated: GLOBAL without its newline"));
        };
        let text = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(text)
    }

    /// Counts `n` more objects built and checks the limit.
    fn count(&mut self, n: u64) -> Result<(), PickleError> {
        self.built = self.built.saturating_add(n);
        if self.built > MAX_OBJECTS {
            return Err(PickleError::TooManyObjects { limit: MAX_OBJECTS });
        }
        Ok(())
    }

    /// A new object, its weight and depth computed from its children and checked.
    fn node(&mut self, value: Value) -> Result<Obj, PickleError> {
        self.count(value.own_weight())?;
        let mut node = Node {
            weight: value.own_weight(),
            depth: 1,
            value: Value::None,
        };
        let children: Vec<Obj> = value.children().into_iter().cloned().collect();
        grow(&mut node, &children)?;
        node.value = value;
        Ok(Rc::new(node))
    }

    fn push(&mut self, value: Value) -> Result<(), PickleError> {
        let obj = self.node(value)?;
        self.stack.push(obj);
        Ok(())
    }

    fn pop(&mut self) -> Result<Obj, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.malformed("stack underflow"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Obj>, PickleError> {
        let Some(mark) = self.marks.pop() else {
            return Err(self.malformed("no MARK to pop to"));
        };
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    /// The object on top of the stack, unshared (a shared one is copied: its elements count as
    /// built, so repeated copies of a big list hit [`MAX_OBJECTS`]).
    fn top_mut(&mut self) -> Result<&mut Node, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.malformed("stack underflow"));
        }
        let shared = self.stack.last().map_or(0, |o| {
            if Rc::strong_count(o) > 1 {
                o.value.children().len()
            } else {
                0
            }
        });
        self.count(shared as u64)?;
        let at = self.at;
        self.stack
            .last_mut()
            .map(Rc::make_mut)
            .ok_or(PickleError::Malformed {
                at,
                reason: "stack underflow".into(),
            })
    }

    /// Adds `items` to the list on top of the stack.
    fn extend_list(&mut self, items: Vec<Obj>) -> Result<(), PickleError> {
        let at = self.at;
        self.count(items.len() as u64)?;
        let top = self.top_mut()?;
        grow(top, &items)?;
        match &mut top.value {
            Value::List(v) => v.extend(items),
            _ => {
                return Err(PickleError::Malformed {
                    at,
                    reason: "APPEND to something that is not a list".into(),
                })
            }
        }
        Ok(())
    }

    /// Adds `items` (key, value, key, value, ...) to the dict on top of the stack.
    fn extend_dict(&mut self, items: Vec<Obj>) -> Result<(), PickleError> {
        let at = self.at;
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("SETITEMS with an odd number of objects"));
        }
        self.count(items.len() as u64)?;
        let top = self.top_mut()?;
        grow(top, &items)?;
        let Value::Dict(d) = &mut top.value else {
            return Err(PickleError::Malformed {
                at,
                reason: "SETITEM on something that is not a dict".into(),
            });
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn memo_get(&mut self, id: u64) -> Result<(), PickleError> {
        let obj = u32::try_from(id)
            .ok()
            .and_then(|id| self.memo.get(&id))
            .cloned();
        let obj = obj.ok_or_else(|| self.malformed(format!("memo entry {id} is missing")))?;
        self.stack.push(obj);
        Ok(())
    }

    fn memo_put(&mut self, id: u64) -> Result<(), PickleError> {
        let obj = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| self.malformed("memo store from an empty stack"))?;
        let id = u32::try_from(id).map_err(|_| self.malformed("memo index over 2^32"))?;
        self.memo.insert(id, obj);
        Ok(())
    }

    fn long(&mut self, n: u64) -> Result<(), PickleError> {
        if n > 8 {
            let at = self.at;
            self.sized("long integer", n)?;
            return Err(PickleError::Malformed {
                at,
                reason: format!("an integer of {n} bytes (over 64 bits)"),
            });
        }
        let b = self.take(n as usize)?;
        let mut v = b
            .iter()
            .rev()
            .fold(0i64, |acc, &x| (acc << 8) | i64::from(x));
        if n > 0 && n < 8 && b[n as usize - 1] & 0x80 != 0 {
            v -= 1i64 << (8 * n); // two's complement
        }
        self.push(Value::Int(v))
    }

    /// Runs one opcode; `Some(root)` at `STOP`.
    fn step(&mut self) -> Result<Option<Obj>, PickleError> {
        self.at = self.pos;
        let Some(&op) = self.data.get(self.pos) else {
            return Err(self.malformed("the pickle ends without a STOP opcode"));
        };
        self.pos += 1;
        match op {
            0x80 => drop(self.take(1)?), // PROTO
            0x95 => {
                // FRAME: a length prefix only, checked against the input
                let n = self.uint(8)?;
                let remaining = (self.data.len() - self.pos) as u64;
                if n > remaining {
                    return Err(PickleError::LengthBeyondInput {
                        at: self.at,
                        what: "frame",
                        declared: n,
                        remaining,
                    });
                }
            }
            b'c' => {
                let (module, name) = (self.line()?, self.line()?);
                self.push(Value::Class { module, name })?;
            }
            0x93 => {
                let (name, module) = (self.pop()?, self.pop()?);
                let (Value::Unicode(m), Value::Unicode(n)) = (&module.value, &name.value) else {
                    return Err(self.malformed("STACK_GLOBAL of something but two strings"));
                };
                let (module, name) = (m.clone(), n.clone());
                self.push(Value::Class { module, name })?;
            }
            b'K' => {
                let v = self.uint(1)?;
                self.push(Value::Int(v as i64))?;
            }
            b'M' => {
                let v = self.uint(2)?;
                self.push(Value::Int(v as i64))?;
            }
            b'J' => {
                let v = self.uint(4)? as u32 as i32;
                self.push(Value::Int(i64::from(v)))?;
            }
            0x8a => {
                let n = self.uint(1)?;
                self.long(n)?;
            }
            0x8b => {
                let n = self.uint(4)?;
                self.long(n)?;
            }
            b'G' => {
                let b = self.uint(8)?.swap_bytes(); // big-endian
                self.push(Value::Float(f64::from_bits(b)))?;
            }
            b'X' | 0x8c | 0x8d => {
                let width = match op {
                    0x8c => 1,
                    b'X' => 4,
                    _ => 8,
                };
                let n = self.uint(width)?;
                let s = self.string(n)?;
                self.push(Value::Unicode(s))?;
            }
            b'B' | b'C' | 0x8e | b'T' | b'U' => {
                let width = match op {
                    b'C' | b'U' => 1,
                    b'B' | b'T' => 4,
                    _ => 8,
                };
                let n = self.uint(width)?;
                let b = self.sized("bytes object", n)?.to_vec();
                self.push(Value::Bytes(b))?;
            }
            b'N' => self.push(Value::None)?,
            0x88 => self.push(Value::Bool(true))?,
            0x89 => self.push(Value::Bool(false))?,
            b')' => self.push(Value::Tuple(Vec::new()))?,
            b']' => self.push(Value::List(Vec::new()))?,
            b'}' => self.push(Value::Dict(Vec::new()))?,
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(items))?;
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Value::List(items))?;
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>, _>>()?;
                items.reverse();
                self.push(Value::Tuple(items))?;
            }
            b'd' => {
                let items = self.pop_mark()?;
                self.push(Value::Dict(Vec::new()))?;
                self.extend_dict(items)?;
            }
            b'a' => {
                let v = self.pop()?;
                self.extend_list(vec![v])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.extend_dict(vec![k, v])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.extend_dict(items)?;
            }
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                if self.marks.last() == Some(&self.stack.len()) {
                    self.pop_mark()?;
                } else {
                    self.pop()?;
                }
            }
            b'1' => drop(self.pop_mark()?),
            b'2' => {
                let top = self.pop()?;
                self.stack.push(Rc::clone(&top));
                self.stack.push(top);
            }
            b'Q' => {
                let id = self.pop()?;
                self.push(Value::PersistentLoad(id))?;
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let dict = matches!(&callable.value, Value::Class { module, name }
                    if module == "collections" && (name == "OrderedDict" || name == "defaultdict"));
                if dict {
                    self.push(Value::Dict(Vec::new()))?;
                } else {
                    self.push(Value::Reduce { callable, args })?;
                }
            }
            b'b' => {
                let args = self.pop()?;
                let obj = self.pop()?;
                if let (Value::Dict(_), Value::Dict(extra)) = (&obj.value, &args.value) {
                    // State set on a dict (OrderedDict's `_metadata`): merged as entries.
                    let items = extra.iter().flat_map(|(k, v)| [k.clone(), v.clone()]);
                    let items: Vec<Obj> = items.collect();
                    self.stack.push(obj);
                    self.extend_dict(items)?;
                } else {
                    self.push(Value::Build {
                        callable: obj,
                        args,
                    })?;
                }
            }
            b'h' => {
                let id = self.uint(1)?;
                self.memo_get(id)?;
            }
            b'j' => {
                let id = self.uint(4)?;
                self.memo_get(id)?;
            }
            b'q' => {
                let id = self.uint(1)?;
                self.memo_put(id)?;
            }
            b'r' => {
                let id = self.uint(4)?;
                self.memo_put(id)?;
            }
            0x94 => {
                let id = self.memo.len() as u64;
                self.memo_put(id)?;
            }
            b'.' => return self.pop().map(Some),
            other => return Err(self.malformed(format!("unsupported opcode 0x{other:02x}"))),
        }
        Ok(None)
    }
}
