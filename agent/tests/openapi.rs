//! The OpenAPI document of agent API v1 (`schemas/openapi/agent-v1.yaml`) against the real
//! agent: its `components.schemas` are the schemas of the Rust types (generated, checked
//! here), each operation names the types its handler really takes and returns, the
//! documented paths are the API's path constants, every documented (method, path) is
//! routed with the documented authentication (an unsigned request to a signed route is
//! the `signed` middleware's 401, a signed one passes it), and every other method on those
//! paths and on near-miss paths reaches no route. The agent runs in-process on 127.0.0.1
//! with a private `local?root=` store and is probed over real HTTP; a probe that reaches
//! no route gets the router's `no route METHOD PATH` 404, which no handler answers.
//!
//! Regenerate the document's schemas with
//! `HOSTCTL_UPDATE_SCHEMAS=1 cargo test -p hostctl-agent --test openapi`.

#![expect(clippy::unwrap_used, clippy::panic, reason = "test code: a failed step must fail the test")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use hostctl_schemas::api::{
    bundles, deployments, gc, generations, headers, hooks, logs, paths, rollback, status, ApiError,
};
use reqwest::Method;
use schemars::generate::{Contract, SchemaGenerator, SchemaSettings};
use schemars::Schema;
use serde_json::{Map, Value};
use support::TestAgent;

/// The line after which the document is generated.
const MARKER: &str = "  # ---- generated from schemas/src/api/*.rs below this line; do not edit ----\n";

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/openapi/agent-v1.yaml")
}

fn doc_text() -> String {
    std::fs::read_to_string(doc_path()).unwrap()
}

fn doc() -> Value {
    serde_yaml::from_str(&doc_text()).unwrap()
}

fn generator(contract: Contract) -> SchemaGenerator {
    SchemaSettings::openapi3().with(|s| s.contract = contract).with_transform(integer_bounds).into_generator()
}

/// States the range of Rust integers (schemars only names their `format`, which clients
/// need not know): a number beyond it is refused like any schema violation.
fn integer_bounds(schema: &mut Schema) {
    schemars::transform::transform_subschemas(&mut integer_bounds, schema);
    let (min, max): (i128, i128) = match schema.get("format").and_then(Value::as_str) {
        Some("uint8") => (0, u8::MAX.into()),
        Some("uint16") => (0, u16::MAX.into()),
        Some("uint32") => (0, u32::MAX.into()),
        Some("uint64") => (0, u64::MAX.into()),
        Some("int32") => (i32::MIN.into(), i32::MAX.into()),
        Some("int64") => (i64::MIN.into(), i64::MAX.into()),
        _ => return,
    };
    let number = |n: i128| match u64::try_from(n) {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(i64::try_from(n).unwrap()),
    };
    schema.insert("minimum".to_owned(), number(min));
    schema.insert("maximum".to_owned(), number(max));
}

/// `components.schemas` as schemars makes them: request bodies as the agent deserializes
/// them, responses as it serializes them (a type in both must come out the same).
fn generated_schemas() -> Map<String, Value> {
    let mut requests = generator(Contract::Deserialize);
    requests.subschema_for::<paths::MissingRequest>();
    requests.subschema_for::<deployments::DeploymentRequest>();
    requests.subschema_for::<rollback::RollbackRequest>();
    requests.subschema_for::<bundles::Manifest>();
    requests.subschema_for::<gc::GcRequest>();
    let mut responses = generator(Contract::Serialize);
    responses.subschema_for::<status::StatusResponse>();
    responses.subschema_for::<paths::MissingResponse>();
    responses.subschema_for::<paths::ImportResponse>();
    responses.subschema_for::<deployments::Deployment>();
    responses.subschema_for::<logs::LogChunk>();
    responses.subschema_for::<rollback::RollbackResponse>();
    responses.subschema_for::<generations::GenerationsResponse>();
    responses.subschema_for::<hooks::HookResponse>();
    responses.subschema_for::<gc::GcReport>();
    responses.subschema_for::<ApiError>();
    let mut all = requests.take_definitions(true);
    for (name, schema) in responses.take_definitions(true) {
        if let Some(other) = all.get(&name) {
            assert_eq!(other, &schema, "{name} differs between its request and response forms: name them apart");
        }
        all.insert(name, schema);
    }
    all
}

/// The generated part of the document's text.
fn generated_tail(schemas: &Map<String, Value>) -> String {
    let yaml = serde_yaml::to_string(&Value::Object(schemas.clone())).unwrap();
    let mut tail = String::from("  schemas:\n");
    for line in yaml.lines() {
        if !line.is_empty() {
            tail.push_str("    ");
        }
        tail.push_str(line);
        tail.push('\n');
    }
    tail
}

#[test]
fn the_documents_schemas_are_the_rust_types_schemas() {
    let text = doc_text();
    let (head, tail) = text.split_once(MARKER).expect("the document has lost its generated-part marker");
    let schemas = generated_schemas();
    let generated = generated_tail(&schemas);
    if std::env::var_os("HOSTCTL_UPDATE_SCHEMAS").is_some_and(|v| v == "1") {
        std::fs::write(doc_path(), format!("{head}{MARKER}{generated}")).unwrap();
        return;
    }
    let parsed = doc()["components"]["schemas"].as_object().cloned().unwrap_or_default();
    let names: BTreeSet<&String> = parsed.keys().chain(schemas.keys()).collect();
    let stale: Vec<&&String> = names.iter().filter(|n| parsed.get(**n) != schemas.get(**n)).collect();
    assert!(
        stale.is_empty(),
        "components.schemas {stale:?} of {} differ from the Rust types'; regenerate with\n  \
         HOSTCTL_UPDATE_SCHEMAS=1 cargo test -p hostctl-agent --test openapi",
        doc_path().display()
    );
    assert!(
        tail == generated,
        "{} is out of date with the Rust types; regenerate it with\n  \
         HOSTCTL_UPDATE_SCHEMAS=1 cargo test -p hostctl-agent --test openapi",
        doc_path().display()
    );
}

/// Every `$ref` in `value`, with where it was found.
fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push((at.clone(), r)),
                    _ => refs(v, format!("{at}/{key}"), out),
                }
            }
        }
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| refs(v, format!("{at}/{i}"), out)),
        _ => {}
    }
}

#[test]
fn every_reference_in_the_document_resolves() {
    let doc = doc();
    let mut found = Vec::new();
    refs(&doc, String::new(), &mut found);
    assert!(found.len() > 40, "{found:?}");
    for (at, r) in found {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{at}: {r} is not local"));
        assert!(doc.pointer(pointer).is_some(), "{at}: {r} does not resolve");
    }
}

/// What each handler reads and answers (from `agent/src`): method, path, request body
/// schema, success status and response schema.
const BODIES: [(&str, &str, Option<&str>, &str, &str); 13] = [
    ("get", status::PATH, None, "200", "StatusResponse"),
    ("post", paths::MISSING_PATH, Some("MissingRequest"), "200", "MissingResponse"),
    ("post", paths::IMPORT_PATH, None, "200", "ImportResponse"),
    ("post", deployments::PATH, Some("DeploymentRequest"), "202", "Deployment"),
    ("get", "/v1/deployments/{id}", None, "200", "Deployment"),
    ("post", "/v1/deployments/{id}/confirm", None, "200", "Deployment"),
    ("get", logs::ROUTE, None, "200", "LogChunk"),
    ("post", rollback::PATH, Some("RollbackRequest"), "202", "Deployment"),
    ("get", generations::PATH, None, "200", "GenerationsResponse"),
    ("post", hooks::PATH, None, "202", "HookResponse"),
    ("get", hostctl_agent::http::METRICS_PATH, None, "200", ""),
    ("post", bundles::PATH, None, "200", "Deployment"),
    ("post", gc::PATH, Some("GcRequest"), "200", "GcReport"),
];

fn schema_ref(content: &Value, media: &str) -> String {
    content[media]["schema"]["$ref"].as_str().unwrap_or_default().trim_start_matches("#/components/schemas/").to_owned()
}

#[test]
fn each_operation_names_the_types_its_handler_uses() {
    let doc = doc();
    for (method, path, request, success, response) in BODIES {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        let body = &op["requestBody"]["content"];
        match request {
            Some(name) => assert_eq!(schema_ref(body, "application/json"), name, "{method} {path} request body"),
            None => assert!(body.get("application/json").is_none_or(|b| b["schema"].get("$ref").is_none())),
        }
        let ok = &op["responses"][success]["content"];
        if response.is_empty() {
            assert!(ok.get("text/plain").is_some(), "{method} {path}: {ok}");
        } else {
            assert_eq!(schema_ref(ok, "application/json"), response, "{method} {path} {success}");
        }
        // Errors are ApiError bodies with the code of their status.
        for (status, r) in op["responses"].as_object().unwrap() {
            if status.starts_with('2') {
                continue;
            }
            let name = r["$ref"].as_str().unwrap_or_else(|| panic!("{method} {path} {status}: not a shared response"));
            let shared = &doc.pointer(name.trim_start_matches('#')).unwrap()["content"]["application/json"]["schema"];
            let code = shared["allOf"][1]["properties"]["error"]["enum"][0].as_str().unwrap();
            let error: hostctl_schemas::api::ErrorCode = serde_json::from_value(Value::from(code)).unwrap();
            assert_eq!(error.http_status().to_string(), *status, "{method} {path}: {name}");
            assert_eq!(shared["allOf"][0]["$ref"], "#/components/schemas/ApiError");
        }
    }
    // The header names the document uses are the ones the agent reads.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["fleetSignature"]["name"], headers::SIGNATURE);
    assert_eq!(schemes["webhookHmac"]["name"].as_str().unwrap().to_ascii_lowercase(), hooks::SIGNATURE_HEADER);
    for name in [headers::KEY, headers::TIMESTAMP, headers::NONCE, headers::CONTENT_SHA256] {
        assert!(schemes["fleetSignature"]["description"].as_str().unwrap().contains(name), "{name}");
    }
    let import = &doc["paths"][paths::IMPORT_PATH]["post"]["parameters"][0];
    assert_eq!((import["name"].as_str(), import["in"].as_str()), (Some(paths::IMPORT_PATHS_HEADER), Some("header")));
    let delivery: Vec<String> = doc["paths"][hooks::PATH]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_ascii_lowercase())
        .collect();
    assert_eq!(delivery, hooks::DELIVERY_HEADERS);
}

/// How a route is authenticated according to the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// `fleetSignature`: the `signed` middleware answers an unsigned request with 401.
    Signed,
    /// Its own check or none (`[]`, `webhookHmac`): the handler runs for an unsigned request.
    Own,
}

/// Every documented (method, path) with its authentication.
fn documented_routes(doc: &Value) -> BTreeMap<(String, String), Auth> {
    let global = &doc["security"];
    let mut routes = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" || method == "servers" {
                continue;
            }
            let security = op.get("security").unwrap_or(global);
            let signed = security.as_array().unwrap().iter().any(|s| s.get("fleetSignature").is_some());
            routes.insert((method.to_ascii_uppercase(), path.clone()), if signed { Auth::Signed } else { Auth::Own });
        }
    }
    routes
}

#[test]
fn the_documented_paths_are_the_apis_path_constants() {
    let doc = doc();
    let documented: BTreeSet<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    let constants: BTreeSet<String> = [
        status::PATH.to_owned(),
        paths::MISSING_PATH.to_owned(),
        paths::IMPORT_PATH.to_owned(),
        deployments::PATH.to_owned(),
        deployments::path_of("{id}"),
        deployments::confirm_path_of("{id}"),
        logs::ROUTE.to_owned(),
        rollback::PATH.to_owned(),
        generations::PATH.to_owned(),
        hooks::PATH.to_owned(),
        hostctl_agent::http::METRICS_PATH.to_owned(),
        bundles::PATH.to_owned(),
        gc::PATH.to_owned(),
    ]
    .into();
    assert_eq!(documented, constants.iter().map(String::as_str).collect());
    let bodies: BTreeSet<(String, String)> =
        BODIES.iter().map(|(m, p, ..)| (m.to_ascii_uppercase(), (*p).to_owned())).collect();
    assert_eq!(documented_routes(&doc).into_keys().collect::<BTreeSet<_>>(), bodies, "one operation per handler");
}

/// A probe's answer: status and the JSON body, if any.
struct Probe {
    status: u16,
    json: Value,
}

impl Probe {
    /// The router's fallback answered: no such route (method and path).
    fn is_no_route(&self, method: &Method, path: &str) -> bool {
        self.status == 404 && self.json["message"] == format!("no route {method} {path}")
    }

    /// The `signed` middleware refused it for lack of a signature.
    fn is_unsigned_refusal(&self) -> bool {
        self.status == 401 && self.json["message"] == format!("missing header {}", headers::KEY)
    }
}

/// The listener a path is documented on: `/metrics` on the plain `metrics_listen` (its
/// own `servers`), everything else on the TLS API listener.
async fn probe(agent: &TestAgent, method: Method, path: &str, signed: bool) -> Probe {
    let client = agent.client();
    let mut request = if path.starts_with(hostctl_agent::http::METRICS_PATH) {
        reqwest::Client::new().request(method.clone(), format!("{}{path}", agent.metrics_base))
    } else {
        client.http.request(method.clone(), format!("{}{path}", agent.base))
    };
    if signed {
        for (name, value) in client.signed_headers(method.as_str(), path, b"") {
            request = request.header(name, value);
        }
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Probe { status, json }
}

/// `/v1/deployments/{id}` with a concrete id.
fn concrete(path: &str) -> String {
    path.replace("{id}", "openapi-probe")
}

/// Whether `url` matches the path template `path` (`{id}`: one non-empty segment).
fn matches(path: &str, url: &str) -> bool {
    let (p, u): (Vec<&str>, Vec<&str>) = (path.split('/').collect(), url.split('/').collect());
    p.len() == u.len() && p.iter().zip(&u).all(|(p, u)| p == u || (p.starts_with('{') && !u.is_empty()))
}

const METHODS: [Method; 6] = [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS];

#[tokio::test]
async fn every_documented_route_is_served_with_its_documented_auth_and_nothing_else_is() {
    let doc = doc();
    let routes = documented_routes(&doc);
    let agent = TestAgent::start(true).await;
    for ((method, path), auth) in &routes {
        let method: Method = method.parse().unwrap();
        let url = concrete(path);
        let unsigned = probe(&agent, method.clone(), &url, false).await;
        assert!(!unsigned.is_no_route(&method, &url), "{method} {path} is documented but not routed");
        match auth {
            Auth::Signed => {
                assert!(
                    unsigned.is_unsigned_refusal(),
                    "{method} {path}: unsigned got {} {}",
                    unsigned.status,
                    unsigned.json
                );
                let signed = probe(&agent, method.clone(), &url, true).await;
                assert!(signed.status != 401, "{method} {path}: signed as documented got {}", signed.json);
            }
            Auth::Own => assert!(
                !unsigned.is_unsigned_refusal(),
                "{method} {path} is documented without a request signature but demands one"
            ),
        }
        // axum answers HEAD with the GET handler (without the body): the same auth.
        if method == Method::GET {
            let head = probe(&agent, Method::HEAD, &url, false).await;
            assert_eq!(head.status, unsigned.status, "HEAD {path}");
        }
    }
    // The API listener does not serve the metrics page.
    let on_api = agent.client().http.get(format!("{}{}", agent.base, hostctl_agent::http::METRICS_PATH)).send().await;
    assert_eq!(on_api.unwrap().status().as_u16(), 404, "GET /metrics on the TLS API listener");
    // Every other method on a documented path, and near-miss paths with every method,
    // reach no route.
    let mut near_misses: Vec<String> =
        ["/", "/v1", "/v1/", "/v2/status", "/v1/paths", "/v1/hooks", "/v1/deployments/"].map(str::to_owned).into();
    for path in doc["paths"].as_object().unwrap().keys() {
        let url = concrete(path);
        near_misses.extend([format!("{url}/"), format!("{url}/x"), url.to_uppercase(), format!("/v1{url}")]);
        for method in METHODS {
            if !routes.contains_key(&(method.to_string(), path.clone())) {
                let p = probe(&agent, method.clone(), &url, false).await;
                assert!(p.is_no_route(&method, &url), "{method} {path} is routed but not documented: {}", p.json);
            }
        }
    }
    near_misses.extend(["/v1/deployments/a/b/confirm".to_owned(), "/v1/deployments/a/cancel".to_owned()]);
    for url in near_misses.iter().filter(|url| !doc["paths"].as_object().unwrap().keys().any(|p| matches(p, url))) {
        for method in METHODS {
            let p = probe(&agent, method.clone(), url, false).await;
            assert!(p.is_no_route(&method, url), "{method} {url} is routed but not documented: {}", p.json);
        }
    }
}
