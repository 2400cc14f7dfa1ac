use crate::{CompactTables, Config, Route, Tombstones};

const KAFKA: &str = "[ingest]\nstream = \"s\"\n[ingest.kafka]\nbrokers = \"b:9092\"\n\
                     group_id = \"g\"\ntopic_pattern = \"^logs\\\\.\"\n";

fn load(text: &str) -> crate::Result<Config> {
    Config::from_toml_str(text, std::iter::empty())
}

fn routed(extra: &str) -> crate::Result<Config> {
    load(&format!(
        "[lake]\ntable_uri = \"s3://lake/logs/${{table}}\"\nsubject_columns = [\"user_id\"]\n\
         {KAFKA}[ingest.flatten]\nkey_field = \"id\"\nevent_time_field = \"ts\"\n{extra}"
    ))
}

/// The error with its sources (a parse error names the key in its source).
fn error_of(result: crate::Result<Config>) -> String {
    let error = result.unwrap_err();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

const ROUTES: &str = "[ingest.routing]\ntemplate = \"${topic}\"\n\
                      topics = { \"logs.pay-v2\" = \"payments\" }\n\
                      patterns = [ { pattern = \"^logs\\\\.audit\\\\.\", table = \"audit\" } ]\n";

#[test]
fn a_table_gets_the_defaults_with_its_own_overrides() {
    let config = routed(&format!(
        "{ROUTES}[tables.payments]\nsubject_columns = [\"account_id\"]\n\
         partition_by = [\"date\", \"region\"]\n[tables.payments.flatten]\nkey_field = \"pid\"\n\
         [tables.payments.upsert]\norder_by = \"updated_at\"\n\
         [tables.audit]\ntable_uri = \"s3://vault/audit\"\nsort_columns = [\"ts\"]\n"
    ))
    .unwrap();
    assert!(config.is_routed());
    assert_eq!(config.table_root().as_deref(), Some("s3://lake/logs"));
    assert_eq!(config.named_tables(), ["audit", "payments"]);

    let payments = config.table("payments").unwrap();
    assert_eq!(payments.lake.table_uri, "s3://lake/logs/payments");
    assert_eq!(payments.lake.partition_by, ["date", "region"]);
    assert_eq!(payments.flatten.key_field.as_deref(), Some("pid"));
    // Its own subject columns, and no event time (its flatten has none).
    assert_eq!(
        payments.compact.sort_columns,
        Some(vec!["account_id".into()])
    );
    assert_eq!(payments.compact.event_time_column, None);
    assert!(payments.compact.upsert.is_some());

    let audit = config.table("audit").unwrap();
    assert_eq!(audit.lake.table_uri, "s3://vault/audit");
    assert_eq!(audit.compact.sort_columns, Some(vec!["ts".into()]));

    // A table only the template names gets the defaults.
    let web = config.table("web").unwrap();
    assert_eq!(web.lake.table_uri, "s3://lake/logs/web");
    assert_eq!(web.lake.subject_columns, ["user_id"]);
    assert_eq!(
        web.compact.sort_columns,
        Some(vec!["user_id".into(), "ts".into()])
    );
    assert_eq!(web.compact.event_time_column.as_deref(), Some("ts"));
    assert!(web.compact.upsert.is_none());

    let kafka = config.ingest.as_ref().unwrap().kafka.as_ref().unwrap();
    assert_eq!(payments.tombstones(kafka), Tombstones::Delete);
    assert_eq!(web.tombstones(kafka), Tombstones::DeadLetter);
    assert!(config.table("../etc").is_err());
}

#[test]
fn topics_route_by_exact_name_then_pattern_then_template() {
    let config = routed(ROUTES).unwrap();
    let router = config.ingest.unwrap().routing.unwrap().router().unwrap();
    assert_eq!(
        router.route_of("logs.pay-v2"),
        Some(Route::Table("payments".into()))
    );
    assert_eq!(
        router.route_of("logs.audit.eu"),
        Some(Route::Table("audit".into()))
    );
    assert_eq!(router.route_of("web"), Some(Route::Table("web".into())));
    // A topic name that is not a safe path segment is made one.
    let odd = router.table_of("web/eu").unwrap();
    assert!(
        odd.starts_with("web_eu-") && crate::is_safe_name(&odd),
        "{odd}"
    );

    let without_template = routed("[ingest.routing]\ntopics = { a = \"t\" }\n").unwrap();
    let router = without_template
        .ingest
        .unwrap()
        .routing
        .unwrap()
        .router()
        .unwrap();
    assert_eq!(router.table_of("b"), None);
}

#[test]
fn compact_tables_is_a_star_or_a_list() {
    let listed = routed(&format!("{ROUTES}[compact]\ntables = [\"a\", \"b\"]\n")).unwrap();
    assert_eq!(
        listed.compact.tables,
        CompactTables::Listed(vec!["a".into(), "b".into()])
    );
    assert_eq!(listed.named_tables(), ["a", "b"]);
    let all = routed(&format!("{ROUTES}[compact]\ntables = \"*\"\n")).unwrap();
    assert_eq!(all.compact.tables, CompactTables::All);
    let err = error_of(routed(&format!("{ROUTES}[compact]\ntables = \"all\"\n")));
    assert!(err.contains("\"all\""), "{err}");
}

#[test]
fn an_unrouted_configuration_is_one_table_named_after_its_location() {
    let config = load(&format!(
        "[lake]\ntable_uri = \"s3://lake/app_logs/\"\n{KAFKA}"
    ))
    .unwrap();
    assert!(!config.is_routed());
    assert_eq!(config.table_root(), None);
    assert!(config.named_tables().is_empty());
    let table = config.single_table().unwrap();
    assert_eq!(table.name, "app_logs");
    assert_eq!(
        config.table("app_logs").unwrap().lake.table_uri,
        "s3://lake/app_logs/"
    );
    let err = config.table("other").unwrap_err().to_string();
    assert!(err.contains("--table") && err.contains("app_logs"), "{err}");

    let routed = routed(ROUTES).unwrap();
    let err = routed.single_table().unwrap_err().to_string();
    assert!(err.contains("--table"), "{err}");
}

#[test]
fn each_routing_mistake_is_named() {
    let bad_uri = "[lake]\ntable_uri = \"s3://lake/${table}/logs\"\n";
    let cases = [
        (error_of(load(bad_uri)), "lake.table_uri"),
        (
            error_of(load(
                "[lake]\ntable_uri = \"/tmp/t\"\n[tables.a]\nsubject_columns = []\n",
            )),
            "tables.a",
        ),
        (
            error_of(load(&format!(
                "[lake]\ntable_uri = \"/tmp/t\"\n{KAFKA}{ROUTES}"
            ))),
            "ingest.routing",
        ),
        (error_of(routed("")), "[ingest.routing] must say"),
        (
            error_of(load(&format!(
                "[lake]\ntable_uri = \"/tmp/${{table}}\"\n[ingest]\nstream = \"s\"\n\
                 [ingest.files]\npath = \"/tmp/in\"\n{ROUTES}"
            ))),
            "[ingest.kafka]",
        ),
        (
            error_of(routed(
                "[ingest.routing]\npatterns = [ { pattern = \"(\", table = \"t\" } ]\n",
            )),
            "ingest.routing.patterns[0].pattern",
        ),
        (
            error_of(routed("[ingest.routing]\ntopics = { a = \"x/y\" }\n")),
            "ingest.routing.topics.a",
        ),
        (
            error_of(routed("[ingest.routing]\ntemplate = \"fixed\"\n")),
            "ingest.routing.template",
        ),
        (error_of(routed("[ingest.routing]\n")), "routes no topic"),
        (
            error_of(routed(&format!(
                "{ROUTES}[tables.a]\ntable_uri = \"s3://x/${{table}}\"\n"
            ))),
            "tables.a.table_uri",
        ),
        (
            error_of(routed(&format!(
                "{ROUTES}[tables.a]\nsubject_column = []\n"
            ))),
            "subject_column",
        ),
        (
            error_of(routed(&format!(
                "{ROUTES}[tables.a]\npartition_by = [\"date\", \"hour\"]\n\
                 [tables.a.flatten]\nkey_field = \"id\"\n"
            ))),
            "tables.a.partition_by",
        ),
        (
            error_of(routed(&format!(
                "{ROUTES}[tables.a.upsert]\norder_by = \"v\"\n[tables.a.flatten]\n"
            ))),
            "tables.a.upsert.order_by",
        ),
        (
            error_of(routed(&format!("{ROUTES}[compact]\ntables = []\n"))),
            "compact.tables",
        ),
    ];
    for (err, named) in cases {
        assert!(err.contains(named), "expected {named:?} in: {err}");
    }
}

#[test]
fn a_compactor_configuration_needs_no_routes() {
    let config =
        load("[lake]\ntable_uri = \"s3://lake/logs/${table}\"\n[compact]\ntables = [\"web\"]\n")
            .unwrap();
    assert_eq!(config.named_tables(), ["web"]);
    assert_eq!(
        config.table("web").unwrap().lake.table_uri,
        "s3://lake/logs/web"
    );
}

#[test]
fn safe_names_stay_and_others_become_distinct_safe_names() {
    assert_eq!(crate::safe_name("logs.web-1_a"), "logs.web-1_a");
    let (a, b) = (crate::safe_name("a/b"), crate::safe_name("a:b"));
    assert_ne!(a, b);
    assert!(crate::is_safe_name(&a) && crate::is_safe_name(&b));
    assert!(!crate::is_safe_name("..") && !crate::is_safe_name(""));
}

const FIELDS: &str = "[[ingest.routing.fields]]\ntopic = \"logs.web\"\nfield = \"host\"\n\
                      values = { h0 = \"a\", h1 = \"b\", h2 = \"a\" }\n\
                      default_table = \"rest\"\n";

#[test]
fn a_field_route_sends_rows_by_value_with_the_lead_last() {
    let config = routed(&format!(
        "[ingest.routing]\ntemplate = \"${{topic}}\"\n{FIELDS}"
    ))
    .unwrap();
    let routing = config.ingest.as_ref().unwrap().routing.clone().unwrap();
    let router = routing.router().unwrap();
    let Some(Route::Field(route)) = router.route_of("logs.web") else {
        panic!("logs.web is field-routed");
    };
    assert_eq!(route.tables(), ["a", "b", "rest"]);
    assert_eq!(route.lead(), "rest");
    assert_eq!(route.unlisted_table(), Some("rest"));
    // Other topics still go by the template.
    assert_eq!(
        router.route_of("logs.x"),
        Some(Route::Table("logs.x".into()))
    );
    assert_eq!(config.named_tables(), ["a", "b", "rest"]);

    let dead = routed(
        "[[ingest.routing.fields]]\ntopic = \"t\"\nfield = \"host\"\nvalues = { h0 = \"a\" }\n\
         unlisted = \"dead-letter\"\ndead_letter_table = \"errors\"\n",
    )
    .unwrap();
    let route = &dead.ingest.unwrap().routing.unwrap().fields[0];
    assert_eq!(route.tables(), ["a", "errors"]);
    assert_eq!(route.unlisted_table(), None);
}

#[test]
fn a_bad_field_route_is_an_error_naming_its_key() {
    for (extra, key) in [
        (
            "[[ingest.routing.fields]]\ntopic = \"t\"\nfield = \"h\"\nvalues = { x = \"a\" }\n",
            "ingest.routing.fields[0].default_table",
        ),
        (
            "[[ingest.routing.fields]]\ntopic = \"t\"\nfield = \"h\"\nvalues = { x = \"a\" }\n\
             unlisted = \"dead-letter\"\ndefault_table = \"r\"\n",
            "ingest.routing.fields[0].dead_letter_table",
        ),
        (
            "[[ingest.routing.fields]]\ntopic = \"t\"\nfield = \"h\"\nvalues = {}\n\
             default_table = \"r\"\n",
            "ingest.routing.fields[0].values",
        ),
        (
            "[[ingest.routing.fields]]\ntopic = \"t\"\nfield = \"h\"\nvalues = { x = \"a/b\" }\n\
             default_table = \"r\"\n",
            "ingest.routing.fields[0].values.x",
        ),
        (
            "[ingest.routing]\ntopics = { t = \"a\" }\n[[ingest.routing.fields]]\ntopic = \"t\"\n\
             field = \"h\"\nvalues = { x = \"a\" }\ndefault_table = \"r\"\n",
            "ingest.routing.fields[0].topic",
        ),
        (
            "[[ingest.routing.fields]]\ntopic = \"t\"\nfield = \"h\"\nvalues = { x = \"a\" }\n\
             default_table = \"r\"\n[tables.a.flatten]\nkey_field = \"k\"\n",
            "tables.a.flatten",
        ),
    ] {
        let error = error_of(routed(extra));
        assert!(error.contains(key), "{key}: {error}");
    }
    // The lead may have its own flattening: it decodes the topic.
    routed(
        "[[ingest.routing.fields]]\ntopic = \"t\"\nfield = \"h\"\nvalues = { x = \"a\" }\n\
         default_table = \"r\"\n[tables.r.flatten]\nkey_field = \"k\"\n",
    )
    .unwrap();
}

#[test]
fn a_files_source_can_be_routed_by_a_field_of_its_stream_only() {
    let files = |routing: &str| {
        load(&format!(
            "[lake]\ntable_uri = \"/lake/${{table}}\"\n[ingest]\nstream = \"s\"\n\
             [ingest.files]\npath = \"in\"\n{routing}"
        ))
    };
    let route = "[[ingest.routing.fields]]\nfield = \"host\"\nvalues = { h0 = \"a\" }\n\
                 default_table = \"rest\"\n";
    files(&format!("{route}topic = \"s\"\n")).unwrap();
    for routing in [
        format!("{route}topic = \"other\"\n"),
        format!("[ingest.routing]\ntemplate = \"${{topic}}\"\n{route}topic = \"s\"\n"),
    ] {
        let error = error_of(files(&routing));
        assert!(
            error.contains("ingest.routing") && error.contains("files"),
            "{error}"
        );
    }
}
