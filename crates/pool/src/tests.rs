//! Pool bookkeeping against real loopback sockets (no PostgreSQL needed: nothing is reset).

use super::*;
use tokio::net::{TcpListener, TcpStream};

fn settings(max: u32) -> PoolSettings {
    PoolSettings {
        max_server_connections: max,
        min_idle: 0,
        idle_timeout: Duration::from_secs(600),
        max_lifetime: Duration::ZERO,
        checkout_timeout: Duration::from_millis(200),
        reset_query: "DISCARD ALL".into(),
    }
}

fn key(user: &str) -> PoolKey {
    PoolKey {
        node: 0,
        login: std::sync::Arc::new(LoginKey::new(user.into(), "db".into(), vec![])),
    }
}

/// A connected socket standing in for a logged-in server connection; the listener's side is
/// kept open so the connection looks alive.
async fn fake_conn(listener: &TcpListener, keep: &mut Vec<TcpStream>) -> Result<ServerConn, ()> {
    let addr = listener.local_addr().map_err(|_| ())?;
    let stream = TcpStream::connect(addr).await.map_err(|_| ())?;
    let (server_side, _) = listener.accept().await.map_err(|_| ())?;
    keep.push(server_side);
    Ok(ServerConn {
        stream: pgrouter_conn::ServerStream::Plain(stream),
        addr,
        parameters: vec![],
        backend_key: None,
        cancels: Default::default(),
        spare_buf: Default::default(),
    })
}

#[tokio::test]
async fn reuse_limit_queue_and_eviction() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server_sides = Vec::new();
    let pools: Pools<u32> = Pools::new(1, settings(2));

    // New connections until the node is full.
    let (a, state, ta) = pools
        .checkout(key("u"), || fake_conn(&listener, &mut server_sides))
        .await
        .unwrap();
    assert_eq!(state, 0);
    assert!(!ta.reused);
    let (b, _, tb) = pools
        .checkout(key("u"), || fake_conn(&listener, &mut server_sides))
        .await
        .unwrap();
    assert_eq!(pools.counts(0), (0, 2));

    // Full: the next client waits, then gets Full.
    let full = pools
        .checkout(key("u"), || fake_conn(&listener, &mut server_sides))
        .await;
    assert!(matches!(full, Err(CheckoutError::Full { max: 2, .. })));

    // A returned connection, with its state, goes to the next client of the same pool.
    let a_port = a.stream.tcp().local_addr().unwrap().port();
    pools.checkin(a, 7, ta, false).await;
    assert_eq!(pools.counts(0), (1, 1));
    let (again, state, t) = pools
        .checkout(key("u"), || fake_conn(&listener, &mut server_sides))
        .await
        .unwrap();
    assert!(t.reused);
    assert_eq!(state, 7);
    assert_eq!(again.stream.tcp().local_addr().unwrap().port(), a_port);
    pools.checkin(again, 7, t, false).await;

    // Another pool on the same full node: the idle connection of the first is closed for room.
    pools.checkin(b, 0, tb, false).await;
    assert_eq!(pools.counts(0), (2, 0));
    let (_other, state, t) = pools
        .checkout(key("v"), || fake_conn(&listener, &mut server_sides))
        .await
        .unwrap();
    assert!(!t.reused);
    assert_eq!(state, 0);
    assert_eq!(pools.counts(0), (1, 1), "one idle connection was evicted");
    let idle = pools.idle_connections();
    assert_eq!(idle.len(), 1);
    assert_eq!(idle[0].key, key("u"));
}

#[tokio::test]
async fn a_closed_idle_connection_is_not_handed_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server_sides = Vec::new();
    let pools: Pools<()> = Pools::new(1, settings(4));
    let (conn, (), ticket) = pools
        .checkout(key("u"), || fake_conn(&listener, &mut server_sides))
        .await
        .unwrap();
    pools.checkin(conn, (), ticket, false).await;
    // The server side goes away while the connection sits in the pool.
    server_sides.clear();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, (), ticket) = pools
        .checkout(key("u"), || fake_conn(&listener, &mut server_sides))
        .await
        .unwrap();
    assert!(!ticket.reused, "a new connection, not the closed one");
}

#[tokio::test]
async fn prune_closes_idle_connections_past_their_time() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server_sides = Vec::new();
    let mut s = settings(4);
    s.idle_timeout = Duration::from_millis(20);
    s.min_idle = 1;
    let pools: Pools<()> = Pools::new(1, s);
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(
            pools
                .checkout(key("u"), || fake_conn(&listener, &mut server_sides))
                .await
                .unwrap(),
        );
    }
    for (c, (), t) in out {
        pools.checkin(c, (), t, false).await;
    }
    assert_eq!(pools.counts(0), (3, 0));
    tokio::time::sleep(Duration::from_millis(50)).await;
    pools.prune();
    assert_eq!(pools.counts(0), (1, 0), "min_idle stays");
}

#[tokio::test]
async fn each_shard_keeps_its_own_idle_connections_within_one_limit() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server_sides = Vec::new();
    let pools: Pools<()> = Pools::with_shards(1, settings(2), 2);

    // Worker 0 opens a connection and returns it.
    crate::set_thread_shard(0);
    let (conn, (), ticket) = pools
        .checkout(key("u"), || fake_conn(&listener, &mut server_sides))
        .await
        .unwrap();
    let first_port = conn.stream.tcp().local_addr().unwrap().port();
    pools.checkin(conn, (), ticket, false).await;

    // Worker 1 does not get worker 0's idle connection: a new one (the node has room).
    crate::set_thread_shard(1);
    let (conn, (), ticket) = pools
        .checkout(key("u"), || fake_conn(&listener, &mut server_sides))
        .await
        .unwrap();
    assert!(!ticket.reused);
    assert_ne!(conn.stream.tcp().local_addr().unwrap().port(), first_port);
    assert_eq!(pools.counts(0), (1, 1));

    // At the limit, worker 1 takes worker 0's idle connection over instead of logging in anew.
    let (taken, (), t3) = pools
        .checkout(key("u"), || fake_conn(&listener, &mut server_sides))
        .await
        .unwrap();
    assert!(t3.reused);
    assert_eq!(taken.stream.tcp().local_addr().unwrap().port(), first_port);
    assert_eq!(pools.counts(0), (0, 2));

    // Worker 1 gets back what it returned.
    let second_port = conn.stream.tcp().local_addr().unwrap().port();
    pools.checkin(conn, (), ticket, false).await;
    let (again, (), t) = pools
        .checkout(key("u"), || fake_conn(&listener, &mut server_sides))
        .await
        .unwrap();
    assert!(t.reused);
    assert_eq!(again.stream.tcp().local_addr().unwrap().port(), second_port);

    // Another pool at the limit: worker 0 closes worker 1's idle connection for room.
    pools.checkin(again, (), t, false).await;
    crate::set_thread_shard(0);
    let (_other, (), t) = pools
        .checkout(key("v"), || fake_conn(&listener, &mut server_sides))
        .await
        .unwrap();
    assert!(!t.reused);
    assert_eq!(
        pools.counts(0),
        (0, 2),
        "the other worker's idle connection was closed"
    );
    drop(taken);
    crate::set_thread_shard(0);
}

#[test]
fn one_login_key_per_distinct_login_while_sessions_hold_it() {
    let pools: Pools<()> = Pools::new(1, settings(2));
    let params = || vec![("application_name".to_string(), "a".to_string())];
    let first = pools.login_key("app".into(), "db".into(), params());
    let same = pools.login_key("app".into(), "db".into(), params());
    assert!(Arc::ptr_eq(&first, &same), "the same login shares one key");
    let cases = [
        ("other", "db", params()),
        ("app", "other", params()),
        ("app", "db", vec![]),
    ];
    for (user, database, params) in cases {
        let other = pools.login_key(user.into(), database.into(), params);
        assert!(!Arc::ptr_eq(&first, &other));
        assert!(*first != *other, "{user} {database}");
    }
    assert_eq!(pools.login_keys(), 1, "keys no one holds are not kept");
    drop((first, same));
    pools.prune();
    assert_eq!(pools.login_keys(), 0);
}
