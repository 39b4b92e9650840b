//! The deployment files of a replicated group parse and say what the README
//! says: three members with distinct ids over one membership, a volume each,
//! and readiness that means "knows a leader".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_yaml::Value;
use sessiond::cluster::ClusterConfig;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../deploy/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| {
        v.get(*k).unwrap_or_else(|| panic!("no {k} in {path:?}"))
    })
}

#[test]
fn the_compose_file_runs_three_members_of_one_group() {
    let mut doc: Value = serde_yaml::from_str(&read("compose.cluster.yaml")).unwrap();
    doc.apply_merge().unwrap();
    let services = get(&doc, &["services"]).as_mapping().unwrap();
    assert_eq!(services.len(), 3);
    let mut ids = Vec::new();
    for (name, svc) in services {
        let env = get(svc, &["environment"]);
        let id: u64 = get(env, &["SESSIOND_NODE_ID"])
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let members =
            ClusterConfig::parse_members(get(env, &["SESSIOND_CLUSTER"]).as_str().unwrap())
                .unwrap();
        assert_eq!(members.len(), 3);
        let host = name.as_str().unwrap();
        assert_eq!(
            members[&id],
            format!("{host}:7380"),
            "member {id} is {host}"
        );
        assert!(get(svc, &["volumes"]).as_sequence().unwrap().len() == 1);
        let probe = get(svc, &["healthcheck", "test"]).as_sequence().unwrap();
        assert!(probe.iter().any(|v| v.as_str() == Some("cluster")));
        ids.push(id);
    }
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3]);
}

#[test]
fn the_statefulset_has_three_replicas_a_volume_each_and_leader_readiness() {
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&read("k8s/sessiond-cluster.yaml"))
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| get(d, &["kind"]).as_str() == Some(k))
            .unwrap()
    };
    let svc = kind("Service");
    assert_eq!(get(svc, &["spec", "clusterIP"]).as_str(), Some("None"));
    assert_eq!(
        get(svc, &["spec", "publishNotReadyAddresses"]).as_bool(),
        Some(true)
    );
    let set = kind("StatefulSet");
    assert_eq!(get(set, &["spec", "replicas"]).as_u64(), Some(3));
    assert_eq!(
        get(set, &["spec", "serviceName"]).as_str(),
        Some("sessiond")
    );
    assert_eq!(
        get(set, &["spec", "volumeClaimTemplates"])
            .as_sequence()
            .unwrap()
            .len(),
        1
    );
    let container = &get(set, &["spec", "template", "spec", "containers"])[0];
    let env = get(container, &["env"]).as_sequence().unwrap();
    let cluster = env
        .iter()
        .find(|e| get(e, &["name"]).as_str() == Some("SESSIOND_CLUSTER"))
        .unwrap();
    let members = ClusterConfig::parse_members(get(cluster, &["value"]).as_str().unwrap()).unwrap();
    for (id, addr) in members {
        assert_eq!(addr, format!("sessiond-{}.sessiond:7380", id - 1));
    }
    let probe = get(container, &["readinessProbe", "exec", "command"])
        .as_sequence()
        .unwrap();
    assert!(probe.iter().any(|v| v.as_str() == Some("cluster")));
}
