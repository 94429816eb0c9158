//! The demo works as its printed curl lines say.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

mod support;

use serde_json::Value;
use support::raw_get;

#[tokio::test]
async fn demo_curl_lines_work_as_printed() {
    let demo = towergate::demo::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = demo.gateway.local_addrs()[0];
    let lines = towergate::demo::curl_lines(addr, &demo.token);
    assert_eq!(lines.len(), 20);
    // Printed in the order they work in when pasted one after another: the
    // normalised path goes to the orders route, whose per-client limit the
    // loop then spends.
    let at = |needle: &str| lines.iter().position(|(l, _)| l.contains(needle)).unwrap();
    assert!(at("--path-as-is") < at("for i in"));
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{addr}");

    let v: Value = c
        .get(format!("{base}/users/42"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["id"], 42);
    let v: Value = c
        .get(format!("{base}/users/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["users"].as_array().unwrap().len() >= 2);
    assert!(v["instance"].as_str().unwrap().starts_with("users-"));
    let v: Value = c
        .get(format!("{base}/orders/7"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["id"], 7);
    let rsp = c
        .post(format!("{base}/orders/7"))
        .body("qty=2")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 201);
    let v: Value = c
        .get(format!("{base}/orders/7"))
        .header("x-beta", "1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["service"], "notifications");
    assert_eq!(v["path"], "/7");
    let v: Value = c
        .get(format!("{base}/notifications/ada"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["user"], "ada");
    let rsp = c
        .delete(format!("{base}/notifications/ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.headers()["allow"], "GET, HEAD");
    towergate_test::assert_problem_reqwest(rsp, 405).await;
    let rsp = c.get(format!("{base}/nope")).send().await.unwrap();
    towergate_test::assert_problem_reqwest(rsp, 404).await;
    let (status, body) = raw_get(addr, "/users/../orders/7", "").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"items\""), "{body}");
    // The visible limit: 5 per 10 s per client on the orders route, of which
    // the requests above used 3 (GET, POST, and the normalised one).
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(
            c.get(format!("{base}/orders/9"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(codes, vec![200, 200, 429, 429]);
    // Authentication: the demo JWT, the demo API key, nothing.
    let v: Value = c
        .get(format!("{base}/account/whoami"))
        .bearer_auth(&demo.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["user"], "ada");
    assert_eq!(v["saw_credentials"], false);
    let v: Value = c
        .get(format!("{base}/account/whoami"))
        .header("x-api-key", "demo-key-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["consumer"], "acme");
    let rsp = c
        .get(format!("{base}/account/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.headers().get_all("www-authenticate").iter().count(), 2);
    towergate_test::assert_problem_reqwest(rsp, 401).await;
    // Two users instances behind one upstream: both answer.
    let mut instances = std::collections::HashSet::new();
    for _ in 0..40 {
        let v: Value = c
            .get(format!("{base}/users/1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        instances.insert(v["instance"].as_str().unwrap().to_owned());
    }
    assert_eq!(instances.len(), 2, "{instances:?}");

    // One request, three services, for the JWT's subject.
    let v: Value = c
        .get(format!("{base}/screens/home"))
        .bearer_auth(&demo.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["user"]["id"], "ada", "{v}");
    assert!(v["user"].get("instance").is_none(), "allow-list: {v}");
    assert_eq!(v["orders"]["id"], v["user"]["customer_id"], "{v}");
    assert_eq!(v["notifications"]["unread"], 3, "{v}");
    assert!(v.get("_partial").is_none(), "{v}");
    // The catalog: a miss, then a hit; no Server header; compressed on request.
    let status = |r: &reqwest::Response| r.headers()["cache-status"].to_str().unwrap().to_owned();
    let first = c.get(format!("{base}/catalog")).send().await.unwrap();
    assert!(status(&first).contains("miss"), "{}", status(&first));
    assert!(first.headers().get("server").is_none());
    assert_eq!(first.headers()["x-served-by"], "towergate (catalog)");
    let second = c.get(format!("{base}/catalog")).send().await.unwrap();
    assert!(status(&second).contains("hit"), "{}", status(&second));
    assert_eq!(first.bytes().await.unwrap(), second.bytes().await.unwrap());
    let br = c
        .get(format!("{base}/catalog"))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(br.headers()["content-encoding"], "br");
    // CORS preflight from a wildcard-subdomain origin, and validation.
    let rsp = c
        .request(reqwest::Method::OPTIONS, format!("{base}/api/orders"))
        .header("origin", "https://shop.example.dev")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        rsp.headers()["access-control-allow-origin"],
        "https://shop.example.dev"
    );
    let rsp = c
        .post(format!("{base}/api/orders"))
        .header("content-type", "application/json")
        .body(r#"{"item":"pen","qty":0}"#)
        .send()
        .await
        .unwrap();
    let p = towergate_test::assert_problem_reqwest(rsp, 400).await;
    assert_eq!(p["errors"][0]["path"], "/qty", "{p}");
    let rsp = c
        .post(format!("{base}/api/orders"))
        .header("content-type", "application/json")
        .body(r#"{"item":"pen","qty":2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 201);
    // The redirect and the maintenance page.
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let rsp = no_redirects
        .get(format!("{base}/old/users/42"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 308);
    assert_eq!(rsp.headers()["location"], "/users/42");
    let rsp = c.get(format!("{base}/maintenance")).send().await.unwrap();
    assert_eq!(rsp.status(), 503);
    assert_eq!(rsp.headers()["retry-after"], "120");
    demo.gateway.shutdown().await;
}
