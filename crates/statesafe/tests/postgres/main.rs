//! The PostgreSQL backend against a real server (see [`cluster`]).

mod cluster;

#[test]
fn cluster_starts() {
    let pg = pg_or_skip!();
    let mut c = pg.client();
    let row = c.query_one("SELECT 1::int4", &[]).unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
}
