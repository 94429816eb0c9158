use std::sync::atomic::AtomicBool;

use tokio::task::JoinHandle;

use super::*;

const LONG: Duration = Duration::from_secs(30);

fn lead(store: &CacheStore, key: &Arc<str>, timeout: Duration) -> Leader {
    match join(store, key, 8, timeout) {
        Join::Leader(leader) => leader,
        _ => panic!("expected to lead"),
    }
}

fn queue(store: &CacheStore, key: &Arc<str>, timeout: Duration) -> Waiter {
    match join(store, key, 8, timeout) {
        Join::Waiter(waiter) => waiter,
        _ => panic!("expected to wait"),
    }
}

/// What became of one waiter, and how long it took.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Found,
    /// Led the next try, which stored its entry after `LEAD_TIME`, or
    /// never ended when `stuck`.
    Led,
    Alone,
}

const LEAD_TIME: Duration = Duration::from_secs(2);

/// Spawns `waiter`'s [`wait`]: it finds an entry once `found` is set; led,
/// it takes `LEAD_TIME` and stores one, unless `stuck` (then it never
/// ends).
fn spawn_wait(
    waiter: Waiter,
    store: &CacheStore,
    key: &Arc<str>,
    timeout: Duration,
    found: &Arc<AtomicBool>,
    stuck: bool,
) -> JoinHandle<(End, Duration)> {
    let (store, key, found) = (store.clone(), Arc::clone(key), Arc::clone(found));
    tokio::spawn(async move {
        let start = Instant::now();
        let look = || found.load(Ordering::SeqCst).then_some(());
        let end = match wait(waiter, &store, &key, 8, timeout, look).await {
            Waited::Found(()) => End::Found,
            Waited::Alone => End::Alone,
            Waited::Lead(leader) => {
                if stuck {
                    tokio::time::sleep(LONG * 10).await;
                }
                tokio::time::sleep(LEAD_TIME).await;
                found.store(true, Ordering::SeqCst);
                leader.finish(Outcome::Stored);
                End::Led
            }
        };
        (end, start.elapsed())
    })
}

async fn ends(tasks: Vec<JoinHandle<(End, Duration)>>) -> Vec<(End, Duration)> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_flight_older_than_the_timeout_takes_no_more_waiters() {
    let store = CacheStore::new();
    let key: Arc<str> = "k".into();
    let timeout = Duration::from_secs(5);
    let stuck = lead(&store, &key, timeout);
    assert!(matches!(join(&store, &key, 8, timeout), Join::Waiter(_)));
    tokio::time::advance(timeout).await;
    // The stuck leader still holds its flight: the next miss leads a
    // new one, which the stuck leader's end does not close.
    let fresh = lead(&store, &key, timeout);
    drop(stuck);
    assert!(matches!(join(&store, &key, 8, timeout), Join::Waiter(_)));
    drop(fresh);
}

#[tokio::test]
async fn waiters_wake_with_the_outcome_and_at_most_max_waiters_wait() {
    let store = CacheStore::new();
    let key: Arc<str> = "k".into();
    let Join::Leader(leader) = join(&store, &key, 2, LONG) else {
        panic!("first is leader")
    };
    let Join::Waiter(mut w1) = join(&store, &key, 2, LONG) else {
        panic!("second waits")
    };
    let Join::Waiter(mut w2) = join(&store, &key, 2, LONG) else {
        panic!("third waits")
    };
    assert!(matches!(join(&store, &key, 2, LONG), Join::Busy));
    let deadline = Instant::now() + LONG;
    let t1 = tokio::spawn(async move { w1.wait_until(deadline).await });
    leader.finish(Outcome::NotStored);
    assert_eq!(t1.await.unwrap(), Some(Outcome::NotStored));
    assert_eq!(w2.wait_until(deadline).await, Some(Outcome::NotStored));
    // The key is free again; a plain drop is an abandoned flight.
    let leader = lead(&store, &key, LONG);
    let mut w = queue(&store, &key, LONG);
    drop(leader);
    assert_eq!(w.wait_until(deadline).await, Some(Outcome::Abandoned));
}

#[tokio::test(start_paused = true)]
async fn waiters_time_out() {
    let store = CacheStore::new();
    let key: Arc<str> = "k".into();
    let _leader = lead(&store, &key, LONG);
    let w = queue(&store, &key, LONG);
    let found = Arc::new(AtomicBool::new(false));
    let timeout = Duration::from_secs(5);
    let got = ends(vec![spawn_wait(w, &store, &key, timeout, &found, false)]).await;
    assert_eq!(got, [(End::Alone, timeout)]);
}

#[tokio::test(start_paused = true)]
async fn a_stored_flight_serves_its_waiters() {
    let store = CacheStore::new();
    let key: Arc<str> = "k".into();
    let found = Arc::new(AtomicBool::new(false));
    let leader = lead(&store, &key, LONG);
    let tasks = (0..3)
        .map(|_| spawn_wait(queue(&store, &key, LONG), &store, &key, LONG, &found, false))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    found.store(true, Ordering::SeqCst);
    leader.finish(Outcome::Stored);
    let second = Duration::from_secs(1);
    assert_eq!(
        ends(tasks).await,
        [
            (End::Found, second),
            (End::Found, second),
            (End::Found, second)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn waiters_of_a_response_not_stored_go_upstream_at_once() {
    let store = CacheStore::new();
    let key: Arc<str> = "k".into();
    let found = Arc::new(AtomicBool::new(false));
    let leader = lead(&store, &key, LONG);
    let tasks = (0..3)
        .map(|_| spawn_wait(queue(&store, &key, LONG), &store, &key, LONG, &found, false))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    leader.finish(Outcome::NotStored);
    // All at once, none in line behind another: none leads a new flight.
    let second = Duration::from_secs(1);
    assert_eq!(
        ends(tasks).await,
        [
            (End::Alone, second),
            (End::Alone, second),
            (End::Alone, second)
        ]
    );
    assert!(store.inner.flights.lock().is_empty());
}

#[tokio::test(start_paused = true)]
async fn waiters_of_an_abandoned_flight_join_again_and_one_leads() {
    let store = CacheStore::new();
    let key: Arc<str> = "k".into();
    let found = Arc::new(AtomicBool::new(false));
    let leader = lead(&store, &key, LONG);
    let tasks = (0..3)
        .map(|_| spawn_wait(queue(&store, &key, LONG), &store, &key, LONG, &found, false))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The leader's client went away.
    drop(leader);
    let mut got = ends(tasks).await;
    got.sort_by_key(|(end, _)| *end != End::Led);
    // One led the next try; the others waited for it and found its entry.
    let after = Duration::from_secs(1) + LEAD_TIME;
    assert_eq!(
        got,
        [(End::Led, after), (End::Found, after), (End::Found, after)]
    );
}

#[tokio::test(start_paused = true)]
async fn joining_again_keeps_the_wait_within_the_timeout() {
    let store = CacheStore::new();
    let key: Arc<str> = "k".into();
    let found = Arc::new(AtomicBool::new(false));
    let timeout = Duration::from_secs(5);
    let leader = lead(&store, &key, timeout);
    // The next leader never ends.
    let tasks = (0..2)
        .map(|_| {
            spawn_wait(
                queue(&store, &key, timeout),
                &store,
                &key,
                timeout,
                &found,
                true,
            )
        })
        .collect::<Vec<_>>();
    tokio::time::sleep(Duration::from_secs(4)).await;
    drop(leader);
    // The waiter behind the stuck one gives up 5 s after its first join,
    // not 5 s after its second.
    let mut tasks = tasks.into_iter();
    let (mut first, mut second) = (tasks.next().unwrap(), tasks.next().unwrap());
    let waited = tokio::select! {
        r = &mut first => r,
        r = &mut second => r,
    };
    first.abort();
    second.abort();
    assert_eq!(waited.unwrap(), (End::Alone, timeout));
}
