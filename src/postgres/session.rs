//! datafusion-postgres' session service, with the parameter types a client
//! declares in its Parse message honoured.
//!
//! PostgreSQL takes a parameter's type from the client when the client
//! gives one (pgjdbc's `setLong`/`setDouble`, psycopg's binary parameters,
//! asyncpg's introspected types) and infers it only otherwise.
//! datafusion-postgres 0.19 ignores the declared types
//! (`Parser::parse_sql` drops its `types` argument) and infers every
//! parameter from the SQL, so `SELECT ? * 2` with a double fails to bind
//! as a bigint. This wrapper gives each declared type to its placeholder
//! after the plan is made; everything else is datafusion-postgres'.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::sqlparser::ast;
use datafusion_postgres::{DfSessionService, Parser};
use futures::Sink;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

type Statement = <Parser as QueryParser>::Statement;

/// The Arrow type a declared wire type binds as; `None` leaves the
/// parameter to inference (unspecified, or a type without a plain match).
fn declared(t: &Type) -> Option<DataType> {
    Some(match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DataType::Utf8,
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Type::BYTEA => DataType::Binary,
        _ => return None,
    })
}

/// Gives the placeholders of `plan` the types the client declared.
fn apply_declared_types(plan: LogicalPlan, types: &[Option<Type>]) -> PgWireResult<LogicalPlan> {
    let wanted = |id: &str| -> Option<DataType> {
        let i: usize = id.strip_prefix('$')?.parse().ok()?;
        declared(types.get(i.checked_sub(1)?)?.as_ref()?)
    };
    if !types.iter().flatten().any(|t| declared(t).is_some()) {
        return Ok(plan);
    }
    plan.transform_up_with_subqueries(|node| {
        node.map_expressions(|e| {
            e.transform_up(|e| match e {
                Expr::Placeholder(mut p) => match wanted(&p.id) {
                    Some(t) if p.field.as_ref().map(|f| f.data_type()) != Some(&t) => {
                        p.field = Some(Arc::new(Field::new(&p.id, t, true)));
                        Ok(Transformed::yes(Expr::Placeholder(p)))
                    }
                    _ => Ok(Transformed::no(Expr::Placeholder(p))),
                },
                other => Ok(Transformed::no(other)),
            })
        })
    })
    .map(|t| t.data)
    .map_err(crate::sqlstate::df_error)
}

/// Describes `$n::oid` and `$n::oid[]` as oid and oid[] rather than the
/// int4 and int4[] they are stored as. asyncpg binds the oids of its type
/// introspection as `$1::oid[]`; it has a built-in codec for oid[] (and
/// text[]) for that query, but would have to introspect int4[] — with the
/// same query, for ever.
fn oid_parameters(statement: &ast::Statement, types: &mut [Type]) {
    let is_oid = |t: &ast::DataType| matches!(t, ast::DataType::Custom(name, _) if name.to_string().eq_ignore_ascii_case("oid"));
    let _ = ast::visit_expressions(statement, |e| {
        if let ast::Expr::Cast {
            expr, data_type, ..
        } = e
            && let ast::Expr::Value(v) = expr.as_ref()
            && let ast::Value::Placeholder(id) = &v.value
            && let Some(slot) = id
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| types.get_mut(i))
        {
            match data_type {
                t if is_oid(t) => *slot = Type::OID,
                ast::DataType::Array(ast::ArrayElemTypeDef::SquareBracket(elem, _))
                    if is_oid(elem) =>
                {
                    *slot = Type::OID_ARRAY
                }
                _ => {}
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

fn is_oid_alias(t: &Type) -> bool {
    matches!(
        *t,
        Type::OID
            | Type::REGTYPE
            | Type::REGCLASS
            | Type::REGPROC
            | Type::REGPROCEDURE
            | Type::REGNAMESPACE
            | Type::REGOPER
            | Type::REGOPERATOR
            | Type::REGROLE
    )
}

fn retyped(field: FieldInfo, t: Type) -> FieldInfo {
    FieldInfo::new(
        field.name().to_string(),
        field.table_id(),
        field.column_id(),
        t,
        field.format(),
    )
}

/// asyncpg's introspection result as PostgreSQL describes it: its oid
/// arrays are oid[] (stored as int4[], the same four bytes per element).
fn oid_column(field: FieldInfo) -> FieldInfo {
    if *field.datatype() == Type::INT4_ARRAY {
        retyped(field, Type::OID_ARRAY)
    } else {
        field
    }
}

/// datafusion-postgres' parser, then the declared types.
pub struct TypedParser {
    inner: Arc<Parser>,
}

#[async_trait]
impl QueryParser for TypedParser {
    type Statement = Statement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        super::complexity::check(sql)?;
        let parsed = self.inner.parse_sql(client, sql, types).await?;
        Ok(match parsed {
            Some((sql, Some((statement, plan)))) => {
                Some((sql, Some((statement, apply_declared_types(plan, types)?))))
            }
            other => other,
        })
    }

    fn get_parameter_types(&self, stmt: &Statement) -> PgWireResult<Vec<Type>> {
        let mut types = self.inner.get_parameter_types(stmt)?;
        if let (_, Some((statement, _))) = stmt {
            oid_parameters(statement, &mut types);
        }
        Ok(types)
    }

    fn get_result_schema(
        &self,
        stmt: &Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let fields = self.inner.get_result_schema(stmt, column_format)?;
        let (_, Some((statement, plan))) = stmt else {
            return Ok(fields);
        };
        // A text value keeps the oid-alias tag of the column it was cast
        // from (`typelem::regtype::text`), and arrow-pg describes it as an
        // oid while it sends text: a binary client reads four bytes of a
        // one-byte string. Describe it as what is sent.
        let fields = fields
            .into_iter()
            .zip(plan.schema().fields().iter())
            .map(|(info, field)| {
                let text = matches!(
                    field.data_type(),
                    DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
                );
                if text && is_oid_alias(info.datatype()) {
                    retyped(info, Type::TEXT)
                } else {
                    info
                }
            });
        if super::rewrite::is_asyncpg_introspection(statement) {
            Ok(fields.map(oid_column).collect())
        } else {
            Ok(fields.collect())
        }
    }
}

/// The session service the server runs.
pub struct Session {
    inner: Arc<DfSessionService>,
    parser: Arc<TypedParser>,
}

impl Session {
    pub fn new(inner: DfSessionService) -> Self {
        let parser = Arc::new(TypedParser {
            inner: inner.query_parser(),
        });
        Session {
            inner: Arc::new(inner),
            parser,
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Session {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        super::complexity::check(query)?;
        SimpleQueryHandler::do_query(&*self.inner, client, query).await
    }
}

#[async_trait]
impl ExtendedQueryHandler for Session {
    type Statement = Statement;
    type QueryParser = TypedParser;

    fn query_parser(&self) -> Arc<TypedParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        ExtendedQueryHandler::do_query(&*self.inner, client, portal, max_rows).await
    }
}
