// node-postgres against baocao: simple and parameterised queries, types,
// errors, a transaction. Run by tests/e2e/clients.rs with PGHOST/PGPORT/
// PGUSER/PGDATABASE set; exits non-zero on the first failed assertion.
'use strict';
const assert = require('node:assert/strict');
const { Client } = require('pg');

async function main() {
  const client = new Client();
  await client.connect();
  try {
    // Simple protocol.
    const version = await client.query('SELECT version()');
    assert.match(version.rows[0].version, /^PostgreSQL 16/);

    const simple = await client.query(
      "SELECT code, name FROM units WHERE code = '01' AND version = DATE '2025-07-01'");
    assert.deepEqual(simple.rows, [{ code: '01', name: 'Thành phố Hà Nội' }]);

    // Parameterised (extended protocol), with the types node-postgres parses.
    const typed = await client.query(
      'SELECT $1::bigint AS big, $2::double precision AS f, $3::text AS t, $4::boolean AS b, ' +
      '$5::date AS d, $6::timestamptz AS tz, CAST(NULL AS TEXT) AS n, count(*) AS c ' +
      'FROM units WHERE version = $5::date AND level = $7',
      ['9007199254740993', 0.1, 'Tây Hồ', true, '2025-07-01', '2024-08-20T10:00:00.123Z', 'ward']);
    const row = typed.rows[0];
    assert.equal(row.big, '9007199254740993'); // int8 comes back as a string
    assert.equal(row.f, 0.1);
    assert.equal(row.t, 'Tây Hồ');
    assert.equal(row.b, true);
    assert.equal(row.tz.toISOString(), '2024-08-20T10:00:00.123Z');
    assert.equal(row.n, null);
    assert.equal(row.c, '126');
    assert.deepEqual(typed.fields.map((f) => f.dataTypeID), [20, 701, 25, 16, 1082, 1184, 25, 20]);

    // A roll-up equals the sum of its wards.
    const wards = await client.query(
      'SELECT sum(r.value) AS total FROM reports r JOIN units u ON u.code = r.unit_code ' +
      "WHERE u.version = DATE '2025-01-01' AND u.parent_code = $1 AND r.period = $2 AND r.indicator_code = $3",
      ['001', '2025-06', 'births']);
    const district = await client.query(
      'SELECT value FROM rollup WHERE unit_code = $1 AND period = $2 AND indicator_code = $3',
      ['001', '2025-06', 'births']);
    assert.equal(district.rows[0].value, wards.rows[0].total);

    // A transaction: nothing is written before COMMIT.
    await client.query('BEGIN');
    const inserted = await client.query(
      'INSERT INTO reports (unit_code, period, indicator_code, value) VALUES ($1, $2, $3, $4)',
      ['00004', '2025-06', 'deaths', 5]);
    assert.equal(inserted.rowCount, 1);
    assert.equal(inserted.command, 'INSERT');
    await client.query('COMMIT');
    const back = await client.query(
      "SELECT value, source FROM reports_history WHERE source = 'INSERT' AND unit_code = '00004' AND period = '2025-06' AND indicator_code = 'deaths'");
    assert.deepEqual(back.rows, [{ value: 5, source: 'INSERT' }]);

    // An error leaves the connection usable.
    await assert.rejects(client.query('SELECT * FROM no_such_table'), (e) => e.code === '42P01');
    const one = await client.query('SELECT 1 AS one');
    assert.equal(one.rows[0].one, '1'); // integer literals are int8 here (see README)
    console.log('node-postgres: all checks passed');
  } finally {
    await client.end();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
