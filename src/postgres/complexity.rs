//! A bound on how deeply a statement nests, checked on its tokens before
//! anything parses it.
//!
//! Parsing, cloning, planning, optimising, executing and dropping a query
//! all recurse over its expression tree, and a chain of 2,000 `+` is a tree
//! 2,000 deep: without a bound one client's statement overflows the stack
//! and aborts the whole server. The tokenizer does not recurse, so the depth
//! is estimated from the tokens, and a statement deeper than [`MAX_DEPTH`]
//! is refused with SQLSTATE 54001, as PostgreSQL refuses one that exceeds
//! its stack depth limit. The server's threads have stacks sized so that
//! everything within the bound fits (see `main`).
//!
//! The estimate is an upper bound: within each pair of brackets (or
//! `CASE … END`), the operators of the longest comma-separated item, plus
//! the deepest bracket inside it. A left-deep chain `a + b + c` is as deep
//! as it has operators; `x IN (1, 2, …)` and wide select lists are shallow.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use pgwire::error::PgWireError;

use crate::sqlstate;

/// The deepest statement accepted: about PostgreSQL's own reach with its
/// default stack, and a filter of 1,000 `col = value OR ...` terms. Depth
/// costs time too: DataFusion plans a chain of 2,000 `+` in about four
/// seconds (the time grows with the square of the depth). A statement
/// timeout or cancel answers the client meanwhile (`session::planned`), but
/// the planning itself runs to its end.
pub const MAX_DEPTH: usize = 2_000;

/// Refuses a statement nested deeper than [`MAX_DEPTH`] with SQLSTATE 54001.
/// A statement the tokenizer cannot read passes: the parser reports it.
pub fn check(sql: &str) -> Result<(), PgWireError> {
    // Every level of the estimate is a token of at least one byte (plus
    // the outermost), so a shorter text cannot exceed the bound.
    if sql.len() < MAX_DEPTH {
        return Ok(());
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let depth = depth(&tokens);
    if depth > MAX_DEPTH {
        return Err(sqlstate::user_error(
            sqlstate::STATEMENT_TOO_COMPLEX,
            format!(
                "statement too complex: its expressions nest about {depth} levels deep, more than the {MAX_DEPTH} this server accepts; \
                 split long chains of AND, OR or + (a list of values fits in IN (...)), or nest fewer brackets"
            ),
        ));
    }
    Ok(())
}

/// One bracket level being read.
#[derive(Default)]
struct Level {
    /// Operators in the current comma-separated item.
    operators: usize,
    /// The deepest bracket closed inside the current item.
    inner: usize,
    /// The deepest item closed so far.
    deepest: usize,
}

impl Level {
    fn end_item(&mut self) {
        self.deepest = self.deepest.max(self.operators + self.inner);
        self.operators = 0;
        self.inner = 0;
    }

    fn depth(mut self) -> usize {
        self.end_item();
        self.deepest + 1
    }
}

/// The estimated nesting depth of the deepest statement in `tokens`.
fn depth(tokens: &[Token]) -> usize {
    let mut levels = vec![Level::default()];
    let mut deepest = 0;
    let close = |levels: &mut Vec<Level>| {
        if levels.len() > 1
            && let Some(level) = levels.pop()
            && let Some(outer) = levels.last_mut()
        {
            let depth = level.depth();
            outer.inner = outer.inner.max(depth);
        }
    };
    for token in tokens {
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => levels.push(Level::default()),
            Token::RParen | Token::RBracket | Token::RBrace => close(&mut levels),
            Token::Word(w) => match w.keyword {
                Keyword::CASE => levels.push(Level::default()),
                Keyword::END => close(&mut levels),
                Keyword::WHEN | Keyword::THEN | Keyword::ELSE => {
                    if let Some(level) = levels.last_mut() {
                        level.end_item();
                    }
                }
                Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::BETWEEN
                | Keyword::IN
                | Keyword::COLLATE
                | Keyword::AT => {
                    if let Some(level) = levels.last_mut() {
                        level.operators += 1;
                    }
                }
                _ => {}
            },
            Token::Comma => {
                if let Some(level) = levels.last_mut() {
                    level.end_item();
                }
            }
            Token::SemiColon => {
                // The next statement starts afresh.
                while levels.len() > 1 {
                    close(&mut levels);
                }
                if let Some(level) = levels.pop() {
                    deepest = deepest.max(level.depth());
                }
                levels.push(Level::default());
            }
            Token::Whitespace(_) | Token::Period | Token::EOF => {}
            t if is_operand(t) => {}
            // Every other token is an operator or punctuation that joins
            // two operands: `+`, `||`, `::`, `=`, `->`, ...
            _ => {
                if let Some(level) = levels.last_mut() {
                    level.operators += 1;
                }
            }
        }
    }
    // Unclosed brackets still count (the parser will refuse them, but only
    // after recursing into them).
    while levels.len() > 1 {
        close(&mut levels);
    }
    levels
        .pop()
        .map_or(deepest, |level| deepest.max(level.depth()))
}

/// Literals and placeholders: operands, not operators.
fn is_operand(token: &Token) -> bool {
    matches!(
        token,
        Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Placeholder(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_of(sql: &str) -> usize {
        depth(
            &Tokenizer::new(&PostgreSqlDialect {}, sql)
                .tokenize()
                .unwrap_or_default(),
        )
    }

    #[test]
    fn chains_are_as_deep_as_their_operators() {
        assert_eq!(depth_of("SELECT 1"), 1);
        assert_eq!(depth_of("SELECT 1 + 2 + 3"), 3);
        assert_eq!(depth_of("SELECT a FROM t WHERE a = 1 OR a = 2 OR a = 3"), 6);
        assert_eq!(depth_of("SELECT ((1))"), 3);
        assert_eq!(depth_of("SELECT (1 + (2 + 3))"), 5);
        assert_eq!(
            depth_of("SELECT CASE WHEN a THEN CASE WHEN b THEN 1 END END"),
            3
        );
    }

    #[test]
    fn lists_and_wide_selects_are_shallow() {
        let list: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
        let sql = format!("SELECT * FROM t WHERE a IN ({})", list.join(", "));
        assert!(depth_of(&sql) < 5);
        let columns: Vec<String> = (0..5000).map(|i| format!("a + {i}")).collect();
        let sql = format!("SELECT {} FROM t", columns.join(", "));
        assert!(depth_of(&sql) < 5);
        // Operators inside strings and comments are not operators.
        let sql = format!("SELECT '{}' -- {}", "+".repeat(50_000), "+".repeat(50_000));
        assert_eq!(depth_of(&sql), 1);
    }

    #[test]
    fn statements_are_measured_each_on_its_own() {
        assert_eq!(depth_of("SELECT 1 + 2; SELECT 1 + 2 + 3 + 4"), 4);
        assert_eq!(depth_of("SELECT ((("), 4);
    }

    #[test]
    fn a_text_shorter_than_the_bound_cannot_exceed_it() {
        // `check` reads no text shorter than MAX_DEPTH: these are as deep
        // as such a text can be, every byte a bracket or an operator.
        for sql in [
            "(".repeat(MAX_DEPTH - 1),
            "[".repeat(MAX_DEPTH - 1),
            format!("SELECT 1{}", "+1".repeat((MAX_DEPTH - 10) / 2)),
            format!("SELECT {}", "CASE ".repeat((MAX_DEPTH - 8) / 5)),
        ] {
            assert!(sql.len() < MAX_DEPTH);
            let depth = depth_of(&sql);
            assert!(depth <= MAX_DEPTH, "{depth} levels in {} bytes", sql.len());
            assert!(check(&sql).is_ok());
        }
    }

    #[test]
    fn too_deep_is_54001() {
        let sql = format!("SELECT {}", vec!["1"; MAX_DEPTH + 2].join(" + "));
        let Err(PgWireError::UserError(info)) = check(&sql) else {
            panic!("accepted");
        };
        assert_eq!(info.code, "54001");
        let sql = format!("SELECT {}", vec!["1"; MAX_DEPTH / 2].join(" + "));
        assert!(check(&sql).is_ok());
    }
}
