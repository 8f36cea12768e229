//! The static cost estimate of one CEL rule, as kube-apiserver 1.25.0 computes it before it
//! accepts a CRD (cel-go v0.12's checker cost estimator, fed the sizes in `sizes`).
//!
//! Costs: 1 per identifier and per field selected from an object or map, 0 per literal and per
//! has(), 1 per O(1) call plus its arguments; `&&` and `||` only their operands; `==`, `!=` and
//! string ordering 0.1 per element of the smaller operand; string functions 0.1 per character
//! traversed; comprehensions (all, exists, map, ...) their body times the list's size.
//! Sizes come from literals, from computed results (`+`, `?:`), or from the schema through
//! the expression's path (`self.spec.name`, `self.items[0]`). A value with no path and no
//! computed size, such as a has() result or any other call's result, is unbounded; cel-go
//! releases after v0.12.4 (Kubernetes 1.26 has v0.12.5) size booleans and numbers as 1, and
//! estimate comparisons of them far lower.

use kube::core::cel::cel::common::ast::{
    CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators,
};
use kube::core::cel::cel::parser::Parser;

use super::sizes::{Decl, Kind};

const UNBOUNDED: u64 = u64::MAX;
const STRING_TRAVERSAL_FACTOR: f64 = 0.1;
const REGEX_LENGTH_FACTOR: f64 = 0.25;
const LIST_CREATE_COST: u64 = 10;
const MAP_CREATE_COST: u64 = 30;

/// The estimated cost of one evaluation of `rule` in the scope `root` (the schema node that
/// declares the rule), or why it cannot be estimated.
pub fn rule_cost(rule: &str, root: &Decl) -> Result<u64, String> {
    let expr = Parser::new().parse(rule).map_err(|e| format!("{rule}: {e}"))?;
    Estimator { root, locals: vec![] }.cost(&expr).map(|node| node.cost)
}

/// The type of an expression: a schema node, or a value computed by the rule.
#[derive(Clone, Copy, Debug)]
enum Ty<'d> {
    Schema(&'d Decl),
    Bool,
    Int,
    Double,
    String,
    Bytes,
    Null,
    List,
    Map,
    Type,
    Dyn,
}

impl<'d> Ty<'d> {
    fn kind(self) -> Option<Kind> {
        match self {
            Ty::Schema(decl) => Some(decl.kind),
            Ty::String => Some(Kind::String),
            Ty::Bytes => Some(Kind::Bytes),
            Ty::Dyn => Some(Kind::Dyn),
            Ty::List => Some(Kind::List),
            Ty::Map => Some(Kind::Map),
            _ => None,
        }
    }

    /// Whether a comparison's overloads include the string or bytes ones, which cost by size.
    fn may_be_text(self) -> bool {
        matches!(self.kind(), Some(Kind::String | Kind::Bytes | Kind::Dyn))
    }

    fn is_dyn(self) -> bool {
        self.kind() == Some(Kind::Dyn)
    }

    /// Selecting a field of an object or map costs 1; of a dyn value nothing.
    fn select_cost(self) -> u64 {
        u64::from(matches!(self.kind(), Some(Kind::Object | Kind::Map)))
    }

    /// The type of an element (list item, map value) and the path step that reaches it.
    fn element(self) -> (Ty<'d>, &'static str) {
        match self {
            Ty::Schema(decl) if decl.kind == Kind::Map => (decl.elem.as_deref().map_or(Ty::Dyn, Ty::Schema), "@values"),
            Ty::Schema(decl) => (decl.elem.as_deref().map_or(Ty::Dyn, Ty::Schema), "@items"),
            Ty::Map => (Ty::Dyn, "@values"),
            _ => (Ty::Dyn, "@items"),
        }
    }

    /// The type of a comprehension's variable over this range, and its path step.
    fn iteration(self) -> (Ty<'d>, &'static str) {
        match self.kind() {
            Some(Kind::Map) => (Ty::String, "@keys"),
            _ => self.element(),
        }
    }
}

/// What the estimator knows of an evaluated expression.
struct Node<'d> {
    cost: u64,
    ty: Ty<'d>,
    /// Variable and field names from the scope to this value, when it is schema data.
    path: Vec<String>,
    /// The size the expression itself tells (a literal's, a concatenation's).
    size: Option<u64>,
}

impl<'d> Node<'d> {
    fn value(cost: u64, ty: Ty<'d>) -> Self {
        Self { cost, ty, path: vec![], size: None }
    }

    fn sized(self, size: u64) -> Self {
        Self { size: Some(size), ..self }
    }
}

struct Local<'d> {
    name: String,
    ty: Ty<'d>,
    path: Vec<String>,
}

struct Estimator<'d> {
    root: &'d Decl,
    locals: Vec<Local<'d>>,
}

impl<'d> Estimator<'d> {
    fn cost(&mut self, e: &IdedExpr) -> Result<Node<'d>, String> {
        match &e.expr {
            Expr::Literal(literal) => {
                let (size, ty) = literal_size(literal);
                Ok(Node::value(0, ty).sized(size))
            }
            Expr::Ident(name) => self.ident(name),
            Expr::Select(select) if select.test => Ok(Node::value(0, Ty::Bool)),
            Expr::Select(select) => {
                let operand = self.cost(&select.operand)?;
                let ty = field_type(operand.ty, &select.field)?;
                let path = [operand.path, vec![select.field.clone()]].concat();
                Ok(Node { cost: operand.cost + operand.ty.select_cost(), ty, path, size: None })
            }
            Expr::Call(call) => self.call(call),
            Expr::List(list) => {
                let items = list.elements.iter().map(|item| self.cost(item)).collect::<Result<Vec<_>, _>>()?;
                let cost = sum(items.iter().map(|item| item.cost)).saturating_add(LIST_CREATE_COST);
                Ok(Node::value(cost, Ty::List).sized(items.len() as u64))
            }
            Expr::Map(map) => {
                let mut cost = MAP_CREATE_COST;
                for entry in &map.entries {
                    let EntryExpr::MapEntry(entry) = &entry.expr else { return Err("struct literal".into()) };
                    cost = sum([cost, self.cost(&entry.key)?.cost, self.cost(&entry.value)?.cost]);
                }
                Ok(Node::value(cost, Ty::Map).sized(map.entries.len() as u64))
            }
            Expr::Comprehension(comprehension) => self.comprehension(comprehension),
            Expr::Struct(_) | Expr::Unspecified => Err(format!("unsupported expression {:?}", e.expr)),
        }
    }

    fn ident(&self, name: &str) -> Result<Node<'d>, String> {
        if let Some(local) = self.locals.iter().rev().find(|local| local.name == name) {
            return Ok(Node { cost: 1, ty: local.ty, path: local.path.clone(), size: None });
        }
        let ty = match name {
            "self" | "oldSelf" => Ty::Schema(self.root),
            "bool" | "int" | "uint" | "double" | "string" | "bytes" | "list" | "map" | "null_type" | "type" => Ty::Type,
            _ => return Err(format!("unknown identifier {name}")),
        };
        Ok(Node { cost: 1, ty, path: vec![name.to_owned()], size: None })
    }

    fn comprehension(&mut self, c: &ComprehensionExpr) -> Result<Node<'d>, String> {
        if c.iter_var2.is_some() {
            return Err("two-variable comprehensions are newer than Kubernetes 1.25".into());
        }
        let range = self.cost(&c.iter_range)?;
        let init = self.cost(&c.accu_init)?;
        let (item, step) = range.ty.iteration();
        // The accumulator has no path: its size is never taken from the schema.
        self.locals.push(Local { name: c.accu_var.clone(), ty: init.ty, path: vec![] });
        let item_path = [range.path.clone(), vec![step.into()]].concat();
        self.locals.push(Local { name: c.iter_var.clone(), ty: item, path: item_path });
        let body = self.cost(&c.loop_cond).and_then(|cond| Ok(cond.cost.saturating_add(self.cost(&c.loop_step)?.cost)));
        self.locals.pop();
        let result = body.and_then(|body| Ok((body, self.cost(&c.result)?)));
        self.locals.pop();
        let (body, result) = result?;
        let loops = self.size(&range).saturating_mul(body);
        Ok(Node::value(sum([range.cost, init.cost, result.cost, loops]), result.ty))
    }

    fn call(&mut self, call: &CallExpr) -> Result<Node<'d>, String> {
        let target = call.target.as_deref().map(|t| self.cost(t)).transpose()?;
        let args = call.args.iter().map(|a| self.cost(a)).collect::<Result<Vec<_>, _>>()?;
        let operands = sum(target.iter().chain(&args).map(|node| node.cost));
        match (call.func_name.as_str(), args.as_slice()) {
            // Short-circuiting: only the operands cost.
            (operators::LOGICAL_AND | operators::LOGICAL_OR, [_, _]) => Ok(Node::value(operands, Ty::Bool)),
            (operators::CONDITIONAL, [cond, yes, no]) => {
                let cost = cond.cost.saturating_add(yes.cost.max(no.cost));
                Ok(Node::value(cost, yes.ty).sized(self.size(yes).max(self.size(no))))
            }
            (operators::INDEX, [container, _]) => {
                let (ty, step) = container.ty.element();
                let path = if container.path.is_empty() {
                    vec![]
                } else {
                    [container.path.clone(), vec![step.into()]].concat()
                };
                Ok(Node { cost: operands.saturating_add(1), ty, path, size: None })
            }
            (operators::ADD, [a, b]) => Ok(self.add(a, b, operands)),
            (name, args) => {
                let (own, ty) = self.function(name, target.as_ref(), args)?;
                Ok(Node::value(own.saturating_add(operands), ty))
            }
        }
    }

    /// `a + b`: concatenations cost by and know their size, sums of numbers do neither.
    fn add(&self, a: &Node<'d>, b: &Node<'d>, operands: u64) -> Node<'d> {
        let size = self.size(a).saturating_add(self.size(b));
        let (own, ty) = match a.ty.kind() {
            Some(Kind::String) => (traverse(size), Ty::String),
            Some(Kind::Bytes) => (traverse(size), Ty::Bytes),
            Some(Kind::List) => (1, Ty::List),
            _ => return Node::value(operands.saturating_add(1), a.ty),
        };
        Node::value(own.saturating_add(operands), ty).sized(size)
    }

    /// The cost of a call itself, without its operands, and its result type.
    fn function(&self, name: &str, target: Option<&Node<'d>>, args: &[Node<'d>]) -> Result<(u64, Ty<'d>), String> {
        Ok(match (name, target, args) {
            (operators::EQUALS | operators::NOT_EQUALS, None, [a, b]) => (self.compare(a, b), Ty::Bool),
            (
                operators::LESS | operators::LESS_EQUALS | operators::GREATER | operators::GREATER_EQUALS,
                None,
                [a, b],
            ) => {
                // Numeric overloads cost 1; string and bytes ones by size; a dyn operand may be either.
                let own = match (a.ty.may_be_text() && b.ty.may_be_text(), a.ty.is_dyn() || b.ty.is_dyn()) {
                    (false, _) => 1,
                    (true, true) => self.compare(a, b).max(1),
                    (true, false) => self.compare(a, b),
                };
                (own, Ty::Bool)
            }
            ("contains", Some(text), [part]) => {
                (traverse(self.size(text)).saturating_mul(traverse(self.size(part))), Ty::Bool)
            }
            ("startsWith" | "endsWith", Some(_), [part]) => (traverse(self.size(part)), Ty::Bool),
            ("matches", Some(text), [regex]) => {
                let text = traverse(self.size(text).saturating_add(1));
                (text.saturating_mul(factor(self.size(regex), REGEX_LENGTH_FACTOR)), Ty::Bool)
            }
            ("string", None, [arg]) => {
                // string(bytes) traverses its argument; a dyn argument may be bytes.
                let own = match arg.ty.kind() {
                    Some(Kind::Bytes) => traverse(self.size(arg)),
                    Some(Kind::Dyn) => traverse(self.size(arg)).max(1),
                    _ => 1,
                };
                (own, Ty::String)
            }
            (operators::IN, None, [_, container]) => (self.size(container), Ty::Bool),
            (operators::LOGICAL_NOT | operators::NOT_STRICTLY_FALSE, None, [_]) => (1, Ty::Bool),
            ("size" | "int" | "uint", _, _) => (1, Ty::Int),
            ("double", None, [_]) => (1, Ty::Double),
            ("type", None, [_]) => (1, Ty::Type),
            (
                operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE | operators::MODULO | operators::NEGATE,
                None,
                [a, ..],
            ) => (1, a.ty),
            _ => return Err(format!("the estimator does not know {name} with {} arguments", args.len())),
        })
    }

    /// Equality, and ordering of strings: a traversal of the smaller operand.
    fn compare(&self, a: &Node<'d>, b: &Node<'d>) -> u64 {
        traverse(self.size(a).min(self.size(b)))
    }

    /// The size of an evaluated expression: its own, or its schema node's; else unbounded.
    fn size(&self, node: &Node<'d>) -> u64 {
        node.size.or_else(|| self.schema_size(&node.path)).unwrap_or(UNBOUNDED)
    }

    /// The max elements of the schema node at `path` (its first step names the variable).
    fn schema_size(&self, path: &[String]) -> Option<u64> {
        let (variable, steps) = path.split_first()?;
        if variable != "self" && variable != "oldSelf" {
            return None;
        }
        let key = Decl::map_key();
        let mut decl = self.root;
        for step in steps {
            decl = match step.as_str() {
                "@items" | "@values" => decl.elem.as_deref()?,
                "@keys" => &key,
                field => decl.fields.get(field)?,
            };
        }
        Some(decl.max_elements)
    }
}

fn field_type<'d>(ty: Ty<'d>, field: &str) -> Result<Ty<'d>, String> {
    match ty {
        Ty::Schema(decl) if decl.kind == Kind::Object => {
            decl.fields.get(field).map(Ty::Schema).ok_or_else(|| format!("no field {field}"))
        }
        Ty::Schema(decl) if decl.kind == Kind::Map => Ok(decl.elem.as_deref().map_or(Ty::Dyn, Ty::Schema)),
        Ty::Schema(decl) if decl.kind != Kind::Dyn => Err(format!("cannot select {field} from {:?}", decl.kind)),
        _ => Ok(Ty::Dyn),
    }
}

/// A literal's size (characters of a string, bytes, 1 for anything else) and type.
fn literal_size<'d>(literal: &LiteralValue) -> (u64, Ty<'d>) {
    match literal {
        LiteralValue::String(s) => (s.inner().len() as u64, Ty::String),
        LiteralValue::Bytes(b) => (b.inner().len() as u64, Ty::Bytes),
        LiteralValue::Boolean(_) => (1, Ty::Bool),
        LiteralValue::Int(_) | LiteralValue::UInt(_) => (1, Ty::Int),
        LiteralValue::Double(_) => (1, Ty::Double),
        LiteralValue::Null => (1, Ty::Null),
    }
}

/// The cost of traversing `size` characters once.
fn traverse(size: u64) -> u64 {
    factor(size, STRING_TRAVERSAL_FACTOR)
}

/// `size * factor`, rounded up, saturating like cel-go.
fn factor(size: u64, factor: f64) -> u64 {
    let product = (size as f64 * factor).ceil();
    if product >= u64::MAX as f64 { u64::MAX } else { product as u64 }
}

fn sum(costs: impl IntoIterator<Item = u64>) -> u64 {
    costs.into_iter().fold(0, u64::saturating_add)
}
