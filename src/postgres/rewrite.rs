//! PostgreSQL forms that DataFusion plans differently or not at all,
//! rewritten into forms it plans the same way. Most come from the
//! introspection queries of clients and BI tools (tests/clients/
//! bi_queries.sql names each query and its source); each rule says what it
//! rewrites and why the result is the same.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr as DfExpr, ExprSchemable, LogicalPlan, Operator};
use datafusion::sql::sqlparser::ast::{
    self, AccessExpr, BinaryOperator, DataType as SqlType, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, SelectItem, SetExpr, Statement, TableFactor, Value, VisitMut,
    VisitorMut,
};
use pgwire::api::ClientInfo;

use super::settings;

/// The pg_type columns of type regproc, which datafusion-pg-catalog keeps as
/// function names rather than oids.
const REGPROC_COLUMNS: &[&str] = &[
    "typinput",
    "typoutput",
    "typreceive",
    "typsend",
    "typmodin",
    "typmodout",
    "typanalyze",
    "typsubscript",
];

/// Applies every AST rule to `statement`.
pub fn postgres_forms(statement: &mut Statement, client: &(dyn ClientInfo + Send + Sync)) {
    let search_path = search_path(client);
    let _ = statement.visit(&mut PostgresForms { search_path });
}

/// The session's search path, `$user` resolved: the one thing of the
/// session the rules read.
pub fn search_path(client: &(dyn ClientInfo + Send + Sync)) -> Vec<String> {
    settings::value(client, "search_path")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .map(|s| {
            if s == "$user" {
                client
                    .metadata()
                    .get(pgwire::api::METADATA_USER)
                    .cloned()
                    .unwrap_or_default()
            } else {
                s
            }
        })
        .filter(|s| !s.is_empty())
        .collect()
}

struct PostgresForms {
    /// The session's search path, `$user` resolved.
    search_path: Vec<String>,
}

fn last_name(name: &ast::ObjectName) -> Option<String> {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_lowercase())
}

fn ident_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.value.to_lowercase()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.to_lowercase()),
        _ => None,
    }
}

fn string_literal(s: &str) -> Expr {
    Expr::Value(Value::SingleQuotedString(s.to_string()).with_empty_span())
}

fn number(n: i64) -> Expr {
    Expr::Value(Value::Number(n.to_string(), false).with_empty_span())
}

fn cast(e: Expr, data_type: SqlType) -> Expr {
    Expr::Cast {
        kind: ast::CastKind::Cast,
        expr: Box::new(e),
        data_type,
        array: false,
        format: None,
    }
}

/// A call of `name` with positional arguments.
pub fn function(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(ast::Function {
        name: ast::ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                .collect(),
            clauses: Vec::new(),
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    })
}

fn positional_args(f: &ast::Function) -> Vec<Expr> {
    match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `1, 2, ... n` for the `n` elements of array `e`, one per row:
/// `unnest(generate_series(1, array_length(e, 1)))` as int.
fn subscripts(e: Expr) -> Expr {
    cast(
        function(
            "unnest",
            vec![function(
                "generate_series",
                vec![number(1), function("array_length", vec![e, number(1)])],
            )],
        ),
        SqlType::Int(None),
    )
}

/// Whether `select` reads only `unnest(<x>.reloptions)`.
fn unnests_reloptions(select: &ast::Select) -> bool {
    let [from] = select.from.as_slice() else {
        return false;
    };
    let TableFactor::UNNEST { array_exprs, .. } = &from.relation else {
        return false;
    };
    from.joins.is_empty()
        && matches!(array_exprs.as_slice(), [e] if ident_name(e).as_deref() == Some("reloptions"))
}

/// The table names and aliases a SELECT reads from.
fn from_names(select: &ast::Select) -> HashSet<String> {
    let mut names = HashSet::new();
    let mut add = |f: &TableFactor| {
        if let TableFactor::Table { name, alias, .. } = f {
            if let Some(n) = last_name(name) {
                names.insert(n);
            }
            if let Some(a) = alias {
                names.insert(a.name.value.to_lowercase());
            }
        }
    };
    for t in &select.from {
        add(&t.relation);
        for j in &t.joins {
            add(&j.relation);
        }
    }
    names
}

/// Whether a subquery refers to a table of the query around it: a
/// qualified column whose qualifier is not one of its own tables.
fn is_correlated(select: &ast::Select) -> bool {
    struct Outer<'a>(&'a HashSet<String>, bool);
    impl ast::Visitor for Outer<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::CompoundIdentifier(parts) = e
                && parts.len() > 1
                && !self
                    .0
                    .contains(&parts[parts.len() - 2].value.to_lowercase())
            {
                self.1 = true;
            }
            ControlFlow::Continue(())
        }
    }
    let names = from_names(select);
    let mut outer = Outer(&names, false);
    let _ = ast::Visit::visit(select, &mut outer);
    outer.1
}

fn is_aggregate_call(e: &Expr) -> bool {
    let Expr::Function(f) = e else { return false };
    last_name(&f.name).is_some_and(|n| {
        matches!(
            n.as_str(),
            "max"
                | "min"
                | "sum"
                | "count"
                | "avg"
                | "array_agg"
                | "string_agg"
                | "bool_and"
                | "bool_or"
                | "every"
        )
    })
}

impl VisitorMut for PostgresForms {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        // `pg_catalog.unnest(a)` in FROM reaches DataFusion as a table
        // function it does not have; `unnest(a)` is its own FROM form.
        if let TableFactor::Table {
            name,
            args: Some(args),
            alias,
            ..
        } = factor
            && last_name(name).as_deref() == Some("unnest")
        {
            let array_exprs = args
                .args
                .iter()
                .filter_map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                    _ => None,
                })
                .collect();
            *factor = TableFactor::UNNEST {
                alias: alias.take(),
                array_exprs,
                with_offset: false,
                with_offset_alias: None,
                with_ordinality: false,
            };
        }
        // A function in FROM with a table alias and no column alias names
        // its one column after the alias: `FROM unnest(a) x` has a column
        // `x` (psql's `\d+` selects `'toast.' || x` from it).
        let alias = match factor {
            TableFactor::UNNEST {
                alias: Some(alias),
                array_exprs,
                with_ordinality: false,
                ..
            } if array_exprs.len() == 1 => alias,
            TableFactor::Table {
                name,
                args: Some(_),
                alias: Some(alias),
                ..
            } if last_name(name).as_deref() == Some("generate_series") => alias,
            _ => return ControlFlow::Continue(()),
        };
        if alias.columns.is_empty() {
            alias.columns = vec![ast::TableAliasColumnDef::from_name(
                alias.name.value.clone(),
            )];
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        match e {
            Expr::Function(f) => {
                let name = last_name(&f.name).unwrap_or_default();
                let args = positional_args(f);
                match (name.as_str(), args.as_slice(), &f.args) {
                    ("array", _, FunctionArguments::Subquery(query)) => {
                        if let Some(replacement) = array_of_subquery(query) {
                            *e = replacement;
                        }
                    }
                    // `_pg_expandarray(a)`: the elements of `a` with their
                    // positions, as a record (x, n) per row (pgjdbc's
                    // getPrimaryKeys, Metabase's index sync).
                    ("_pg_expandarray", [a], _) => {
                        *e = function(
                            "named_struct",
                            vec![
                                string_literal("x"),
                                function("unnest", vec![a.clone()]),
                                string_literal("n"),
                                subscripts(a.clone()),
                            ],
                        );
                    }
                    // `generate_subscripts(a, 1)`: 1 ... length, one per row
                    // (SQLAlchemy's and Superset's key column order).
                    ("generate_subscripts", [a, _], _) => *e = subscripts(a.clone()),
                    _ => {}
                }
            }
            // `(record).field` is `get_field(record, 'field')`.
            Expr::CompoundFieldAccess { root, access_chain }
                if access_chain
                    .iter()
                    .all(|a| matches!(a, AccessExpr::Dot(Expr::Identifier(_)))) =>
            {
                let mut out = match root.as_ref() {
                    Expr::Nested(inner) => inner.as_ref().clone(),
                    other => other.clone(),
                };
                for a in access_chain.iter() {
                    if let AccessExpr::Dot(Expr::Identifier(field)) = a {
                        out = function("get_field", vec![out, string_literal(&field.value)]);
                    }
                }
                *e = out;
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => regproc_comparison(left, right),
            // Grafana's column list filters `quote_ident(table_schema) IN
            // (<search path>)`; datafusion-pg-catalog replaces its search
            // path subquery by ''. The session's search path goes back in.
            Expr::InList {
                expr,
                list,
                negated: false,
            } if matches!(expr.as_ref(), Expr::Function(f) if last_name(&f.name).as_deref() == Some("quote_ident"))
                && matches!(list.as_slice(), [Expr::Value(v)] if v.value == Value::SingleQuotedString(String::new())) =>
            {
                *list = self.search_path.iter().map(|s| string_literal(s)).collect();
            }
            // asyncpg's type introspection (asyncpg/introspection.py) finds
            // a domain's base type with a recursive CTE correlated to the
            // type `t`, which DataFusion cannot plan inside its own
            // recursive CTE. Every domain here is one of pg_catalog's, each
            // directly over a base type (no DDL reaches the engine), so the
            // base type is `t.typbasetype`.
            Expr::Subquery(query) if domain_base_type(query).is_some() => {
                if let Some(outer) = domain_base_type(query) {
                    *e = Expr::CompoundIdentifier(vec![outer, Ident::new("typbasetype")]);
                }
            }
            // A correlated scalar subquery must be an aggregate for
            // DataFusion; `max` of the one row PostgreSQL allows is that row
            // (Npgsql's type loading picks a range's multirange this way).
            Expr::Subquery(query) => {
                if let SetExpr::Select(select) = query.body.as_mut()
                    && query.limit_clause.is_none()
                    && select.having.is_none()
                    && matches!(&select.group_by, ast::GroupByExpr::Expressions(g, _) if g.is_empty())
                    && is_correlated(select)
                    && let [SelectItem::UnnamedExpr(item)] = select.projection.as_mut_slice()
                    && !is_aggregate_call(item)
                {
                    *item = function("max", vec![item.clone()]);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// The alias of the outer type in asyncpg's domain lookup
/// `(WITH RECURSIVE typebases(oid, depth) AS (SELECT t2.typbasetype ...
/// WHERE t2.oid = t.oid UNION ALL ...) SELECT oid FROM typebases ...)`.
fn domain_base_type(query: &ast::Query) -> Option<Ident> {
    let with = query.with.as_ref()?;
    let [cte] = with.cte_tables.as_slice() else {
        return None;
    };
    if !with.recursive || !cte.alias.name.value.eq_ignore_ascii_case("typebases") {
        return None;
    }
    let SetExpr::SetOperation { left, .. } = cte.query.body.as_ref() else {
        return None;
    };
    let SetExpr::Select(anchor) = left.as_ref() else {
        return None;
    };
    let own = from_names(anchor);
    let Some(Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    }) = anchor.selection.as_ref()
    else {
        return None;
    };
    [left.as_ref(), right.as_ref()]
        .into_iter()
        .find_map(|side| match side {
            Expr::CompoundIdentifier(parts)
                if parts.len() == 2
                    && parts[1].value.eq_ignore_ascii_case("oid")
                    && !own.contains(&parts[0].value.to_lowercase()) =>
            {
                Some(parts[0].clone())
            }
            _ => None,
        })
}

/// Whether `statement` is asyncpg's type introspection query (its
/// recursive `typeinfo_tree`), whose oid columns must be described as oid
/// and oid[] (see `session.rs`).
pub fn is_asyncpg_introspection(statement: &Statement) -> bool {
    let Statement::Query(q) = statement else {
        return false;
    };
    q.with.as_ref().is_some_and(|w| {
        w.recursive
            && w.cte_tables
                .iter()
                .any(|c| c.alias.name.value.eq_ignore_ascii_case("typeinfo_tree"))
    })
}

/// `ARRAY(SELECT e FROM ...)` as `(SELECT array_agg(e) FROM ...)`.
fn array_of_subquery(query: &ast::Query) -> Option<Expr> {
    if query.order_by.is_some() || query.limit_clause.is_some() {
        return None;
    }
    let mut query = query.clone();
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    if unnests_reloptions(select) {
        // No relation here has storage options (pg_class.reloptions is
        // NULL throughout), so the array is NULL; DataFusion cannot unnest
        // a column of the outer query.
        return Some(cast(
            Expr::Value(Value::Null.with_empty_span()),
            SqlType::Array(ast::ArrayElemTypeDef::SquareBracket(
                Box::new(SqlType::Text),
                None,
            )),
        ));
    }
    let item = match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(e)] | [SelectItem::ExprWithAlias { expr: e, .. }] => e.clone(),
        _ => return None,
    };
    if !matches!(&select.group_by, ast::GroupByExpr::Expressions(g, _) if g.is_empty()) {
        return None;
    }
    select.projection = vec![SelectItem::UnnamedExpr(function("array_agg", vec![item]))];
    Some(Expr::Subquery(Box::new(query)))
}

/// pg_type's regproc columns hold function names here, so a comparison
/// with a function's oid compares names instead:
/// - `p.oid = t.typreceive` becomes `p.proname = t.typreceive` (Npgsql's
///   type loading); each name in pg_type is one pg_proc row;
/// - `t.typinput = (SELECT oid FROM pg_proc WHERE proname =
///   'pg_catalog.array_in')`, which datafusion-pg-catalog makes of
///   `'pg_catalog.array_in'::regproc`, becomes `t.typinput = 'array_in'`
///   (pgjdbc's type cache).
fn regproc_comparison(left: &mut Box<Expr>, right: &mut Box<Expr>) {
    let is_regproc =
        |e: &Expr| ident_name(e).is_some_and(|n| REGPROC_COLUMNS.contains(&n.as_str()));
    if is_regproc(left) {
        name_for_oid(right);
    } else if is_regproc(right) {
        name_for_oid(left);
    }
}

/// The function name for `p.oid` or for an oid lookup by name.
fn name_for_oid(other: &mut Expr) {
    match other {
        Expr::CompoundIdentifier(parts)
            if parts
                .last()
                .is_some_and(|p| p.value.eq_ignore_ascii_case("oid")) =>
        {
            if let Some(last) = parts.last_mut() {
                *last = Ident::new("proname");
            }
        }
        Expr::Subquery(query) => {
            if let Some(name) = proc_oid_lookup(query) {
                *other = string_literal(name.trim_start_matches("pg_catalog."));
            }
        }
        _ => {}
    }
}

/// The name in `SELECT oid FROM pg_catalog.pg_proc WHERE proname = 'name'`.
fn proc_oid_lookup(query: &ast::Query) -> Option<String> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let [from] = select.from.as_slice() else {
        return None;
    };
    let TableFactor::Table { name, .. } = &from.relation else {
        return None;
    };
    if last_name(name).as_deref() != Some("pg_proc") {
        return None;
    }
    match select.selection.as_ref()? {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } if ident_name(left).as_deref() == Some("proname") => match right.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// A boolean compared with a text literal takes the literal as a boolean,
/// as PostgreSQL does (`indisprimary = 'f'`, Superset's index list):
/// t/f/true/false/yes/no/on/off/1/0 in any case.
pub fn boolean_literals(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    fn as_bool(s: &str) -> Option<bool> {
        match s.trim().to_lowercase().as_str() {
            "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
            "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
            _ => None,
        }
    }
    fn text_literal(e: &DfExpr) -> Option<&str> {
        match e {
            DfExpr::Literal(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::Utf8View(Some(s))
                | ScalarValue::LargeUtf8(Some(s)),
                _,
            ) => Some(s),
            _ => None,
        }
    }
    plan.transform_up_with_subqueries(|node| {
        let schemas: Vec<DFSchema> = node
            .inputs()
            .iter()
            .map(|i| i.schema().as_ref().clone())
            .collect();
        let merged = schemas.iter().skip(1).try_fold(
            schemas.first().cloned().unwrap_or_else(DFSchema::empty),
            |mut acc, s| {
                acc.merge(s);
                Ok::<_, datafusion::error::DataFusionError>(acc)
            },
        )?;
        node.map_expressions(|e| {
            e.transform_up(|e| {
                let DfExpr::BinaryExpr(BinaryExpr { left, op, right }) = &e else {
                    return Ok(Transformed::no(e));
                };
                if !matches!(
                    op,
                    Operator::Eq
                        | Operator::NotEq
                        | Operator::IsDistinctFrom
                        | Operator::IsNotDistinctFrom
                ) {
                    return Ok(Transformed::no(e));
                }
                let is_bool = |x: &DfExpr| {
                    x.get_type(&merged)
                        .is_ok_and(|t| t == datafusion::arrow::datatypes::DataType::Boolean)
                };
                let (left, right) = match (text_literal(left), text_literal(right)) {
                    (None, Some(text)) if is_bool(left) => match as_bool(text) {
                        Some(b) => (left.clone(), Box::new(datafusion::logical_expr::lit(b))),
                        None => return Ok(Transformed::no(e)),
                    },
                    (Some(text), None) if is_bool(right) => match as_bool(text) {
                        Some(b) => (Box::new(datafusion::logical_expr::lit(b)), right.clone()),
                        None => return Ok(Transformed::no(e)),
                    },
                    _ => return Ok(Transformed::no(e)),
                };
                Ok(Transformed::yes(DfExpr::BinaryExpr(BinaryExpr {
                    left,
                    op: *op,
                    right,
                })))
            })
        })
    })
    .map(|t| t.data)
}
