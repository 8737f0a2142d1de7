// pgjdbc (Debian's libpostgresql-jdbc-java) against baocao: DatabaseMetaData,
// PreparedStatement with typed parameters, ResultSet getters, errors, a
// transaction. Run by tests/e2e/clients.rs as a single-file source program
// with PGHOST/PGPORT/PGUSER/PGDATABASE set; exits non-zero on a failed check.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.Date;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.sql.Types;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

public class ClientTest {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static void checkEquals(Object expected, Object actual, String what) {
        if (!Objects.equals(expected, actual)) {
            throw new AssertionError(what + ": expected <" + expected + "> but was <" + actual + ">");
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT")
                + "/" + System.getenv("PGDATABASE") + "?sslmode=disable";
        try (Connection conn = DriverManager.getConnection(url, System.getenv("PGUSER"), "")) {
            metadata(conn);
            prepared(conn);
            specialValues(conn);
            transaction(conn);
            errors(conn);
        }
        System.out.println("JDBC: all checks passed");
    }

    static void metadata(Connection conn) throws SQLException {
        DatabaseMetaData meta = conn.getMetaData();
        check(meta.getDatabaseProductName().equals("PostgreSQL"), "product name");
        checkEquals(16, meta.getDatabaseMajorVersion(), "major version");

        List<String> schemas = new ArrayList<>();
        try (ResultSet rs = meta.getSchemas()) {
            while (rs.next()) {
                schemas.add(rs.getString("TABLE_SCHEM"));
            }
        }
        check(schemas.contains("public"), "getSchemas lists public: " + schemas);

        List<String> tables = new ArrayList<>();
        try (ResultSet rs = meta.getTables(null, "public", "%", null)) {
            while (rs.next()) {
                tables.add(rs.getString("TABLE_NAME"));
            }
        }
        for (String t : new String[] {"reports", "reports_history", "rollup", "units", "indicators", "completeness"}) {
            check(tables.contains(t), "getTables lists " + t + ": " + tables);
        }

        List<String> columns = new ArrayList<>();
        List<Integer> types = new ArrayList<>();
        try (ResultSet rs = meta.getColumns(null, "public", "reports", null)) {
            while (rs.next()) {
                columns.add(rs.getString("COLUMN_NAME"));
                types.add(rs.getInt("DATA_TYPE"));
            }
        }
        checkEquals(List.of("unit_code", "period", "indicator_code", "value"), columns.subList(0, 4),
                "getColumns(reports)");
        checkEquals(Types.VARCHAR, types.get(0), "unit_code type");
        checkEquals(Types.DOUBLE, types.get(3), "value type");
    }

    static void prepared(Connection conn) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT code, name, area_km2, version FROM units WHERE code = ? AND version = ?")) {
            ps.setString(1, "00004");
            ps.setDate(2, Date.valueOf("2025-07-01"));
            try (ResultSet rs = ps.executeQuery()) {
                check(rs.next(), "a row for ward 00004");
                checkEquals("Phường Ba Đình", rs.getString("name"), "name");
                checkEquals(2.97, rs.getDouble("area_km2"), "area");
                checkEquals(Date.valueOf("2025-07-01"), rs.getDate("version"), "version");
                check(!rs.next(), "one row");
            }
        }
        Timestamp moment = Timestamp.valueOf("2024-08-20 17:00:00.123456");
        try (PreparedStatement ps = conn.prepareStatement("SELECT ? + 1 AS l, ? * 2 AS d, ? AS ts, ? AS s")) {
            ps.setLong(1, 9007199254740992L);
            ps.setDouble(2, 0.25);
            ps.setTimestamp(3, moment);
            ps.setString(4, "Hà Đông");
            try (ResultSet rs = ps.executeQuery()) {
                check(rs.next(), "a row");
                checkEquals(9007199254740993L, rs.getLong("l"), "long");
                checkEquals(0.5, rs.getDouble("d"), "double");
                checkEquals(moment, rs.getTimestamp("ts"), "timestamp");
                checkEquals("Hà Đông", rs.getString("s"), "text");
            }
        }
        // The same statement again and again: pgjdbc switches to a named
        // server-side statement after prepareThreshold (5) executions.
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT count(*) FROM units WHERE level = ? AND version = ?")) {
            for (int i = 0; i < 7; i++) {
                ps.setString(1, "ward");
                ps.setDate(2, Date.valueOf(i % 2 == 0 ? "2025-01-01" : "2025-07-01"));
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next(), "count row");
                    checkEquals(i % 2 == 0 ? 526L : 126L, rs.getLong(1), "ward count " + i);
                }
            }
        }
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT value, reporting_units, expected_units FROM rollup "
                        + "WHERE unit_code = ? AND period = ? AND indicator_code = ?")) {
            ps.setString(1, "01");
            ps.setString(2, "2025-07");
            ps.setString(3, "population");
            try (ResultSet rs = ps.executeQuery()) {
                check(rs.next(), "city population");
                check(rs.getDouble(1) > 1_000_000, "city population is in millions");
                checkEquals(126L, rs.getLong(3), "expected wards after the reform");
                check(rs.getLong(2) <= 126, "reporting wards");
            }
        }
    }

    static void specialValues(Connection conn) throws SQLException {
        try (Statement st = conn.createStatement();
                ResultSet rs = st.executeQuery("SELECT CAST('Infinity' AS DOUBLE PRECISION), "
                        + "CAST(12 AS DOUBLE PRECISION), CAST(NULL AS DOUBLE PRECISION)")) {
            check(rs.next(), "a row");
            checkEquals(Double.POSITIVE_INFINITY, rs.getDouble(1), "Infinity");
            checkEquals("12", rs.getString(2), "12 in text");
            rs.getDouble(3);
            check(rs.wasNull(), "NULL stays NULL");
        }
    }

    static void transaction(Connection conn) throws SQLException {
        conn.setAutoCommit(false);
        try (PreparedStatement ps = conn.prepareStatement(
                "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES (?, ?, ?, ?)")) {
            ps.setString(1, "00004");
            ps.setString(2, "2025-07");
            ps.setString(3, "marriages");
            ps.setDouble(4, 9);
            checkEquals(1, ps.executeUpdate(), "rows inserted");
        }
        conn.rollback();
        try (PreparedStatement ps = conn.prepareStatement(
                "INSERT INTO reports (unit_code, period, indicator_code, value) VALUES (?, ?, ?, ?)")) {
            ps.setString(1, "00004");
            ps.setString(2, "2025-07");
            ps.setString(3, "births");
            ps.setDouble(4, 11);
            ps.executeUpdate();
        }
        conn.commit();
        conn.setAutoCommit(true);
        try (Statement st = conn.createStatement();
                ResultSet rs = st.executeQuery("SELECT indicator_code, value FROM reports_history "
                        + "WHERE unit_code = '00004' AND period = '2025-07' AND source = 'INSERT' ORDER BY 1")) {
            check(rs.next(), "the committed row");
            checkEquals("births", rs.getString(1), "indicator");
            checkEquals(11.0, rs.getDouble(2), "value");
            check(!rs.next(), "the rolled back row is not there");
        }
    }

    static void errors(Connection conn) throws SQLException {
        try (Statement st = conn.createStatement()) {
            try {
                st.executeQuery("SELECT * FROM no_such_table");
                throw new AssertionError("no error for a missing table");
            } catch (SQLException e) {
                checkEquals("42P01", e.getSQLState(), "SQLSTATE");
            }
            try (ResultSet rs = st.executeQuery("SELECT 1")) {
                check(rs.next() && rs.getInt(1) == 1, "usable after an error");
            }
        }
    }
}
