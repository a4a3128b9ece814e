import pytest

from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.poolconfig import (
    STORPOOL_CONF_ENV,
    PoolSpec,
    Secret,
    check_pool_id,
    load_pools,
    parse_pool_url,
    parse_pools,
)

GOOD = "SP_API_HTTP=10.0.0.5:8181;SP_AUTH_TOKEN=s3cr3t;SP_TEMPLATE=ssd-r3"
UUID1 = "8b3c9f2e-8a53-4f0e-9a39-0d3c5b2e6a11"
UUID2 = "1d0e4c55-51e4-4a3a-b0f6-3f7d4c0b2a22"


def test_key_value_form() -> None:
    p = parse_pool_url(GOOD)
    assert (p.host, p.port, p.template) == ("10.0.0.5", 8181, "ssd-r3")
    assert p.token.reveal() == "s3cr3t"


def test_key_order_and_default_port() -> None:
    p = parse_pool_url("SP_TEMPLATE=t;SP_AUTH_TOKEN=x;SP_API_HTTP=sp-api")
    assert (p.host, p.port, p.template) == ("sp-api", 81, "t")


def test_storpool_scheme() -> None:
    p = parse_pool_url("storpool://tok@api.example:81/hybrid")
    assert (p.host, p.port, p.template, p.token.reveal()) == ("api.example", 81, "hybrid", "tok")


@pytest.mark.parametrize(
    ("url", "field", "words"),
    [
        ("", "url", "empty"),
        ("SP_API_HTTP=h:81;SP_AUTH_TOKEN=t", "url.SP_TEMPLATE", "missing"),
        ("SP_API_HTTP=h:81;SP_TEMPLATE=x", "url.SP_AUTH_TOKEN", "missing"),
        ("SP_AUTH_TOKEN=t;SP_TEMPLATE=x", "url.SP_API_HTTP", "missing"),
        ("SP_API_HTTP=h:eighty;SP_AUTH_TOKEN=t;SP_TEMPLATE=x", "url.SP_API_HTTP", "not a number"),
        ("SP_API_HTTP=h:70000;SP_AUTH_TOKEN=t;SP_TEMPLATE=x", "url.SP_API_HTTP", "out of range"),
        ("SP_API_HTTP=h:;SP_AUTH_TOKEN=t;SP_TEMPLATE=x", "url.SP_API_HTTP", "port is empty"),
        ("SP_API_HTTP=:81;SP_AUTH_TOKEN=t;SP_TEMPLATE=x", "url.SP_API_HTTP", "bad API host"),
        ("SP_API_HTTP=h:81;SP_AUTH_TOKEN=;SP_TEMPLATE=x", "url.SP_AUTH_TOKEN", "empty"),
        ("SP_API_HTTP=h:81;SP_AUTH_TOKEN=t;SP_TEMPLATE=bad name", "url.SP_TEMPLATE", "not a valid"),
        ("SP_API_HTTP=h:81;SP_AUTH_TOKEN=t;SP_TEMPLATE=a.b", "url.SP_TEMPLATE", "not a valid"),
        ("SP_API_HTTP=h:81;SP_AUTH_TOKEN=t;SP_TEMPLATE=x;SP_COLOUR=red", "url.SP_COLOUR", "unknown key"),
        ("SP_API_HTTP=h:81;SP_AUTH_TOKEN=t;SP_TEMPLATE=x;SP_TEMPLATE=y", "url.SP_TEMPLATE", "twice"),
        ("SP_API_HTTP=h:81;SP_AUTH_TOKEN;SP_TEMPLATE=x", "url.SP_AUTH_TOKEN", "KEY=VALUE"),
        ("SP_API_HTTP=h:81;s3cr3t-typed-alone;SP_TEMPLATE=x", "url", "item 2 is not KEY=VALUE"),
        ("http://h:81/x", "url", "unknown URL scheme"),
        ("storpool://h:81/x", "url.token", "missing 'token@'"),
        ("storpool://t@h:81", "url.template", "missing '/template'"),
        ("storpool://t@h:81/", "url.template", "missing '/template'"),
        ("storpool://t@h:0/x", "url.endpoint", "out of range"),
        ("storpool://@h:81/x", "url.token", "empty"),
        ("storpool://t@h:81/x!y", "url.template", "not a valid"),
    ],
)
def test_every_malformed_part_names_its_field(url: str, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_pool_url(url)
    assert info.value.field == field
    assert words in info.value.message


def test_a_token_typed_without_its_key_is_not_echoed() -> None:
    with pytest.raises(ValidationError) as info:
        parse_pool_url("SP_API_HTTP=h:81;s3cr3t-typed-alone;SP_TEMPLATE=x")
    assert "s3cr3t" not in str(info.value) and "s3cr3t" not in info.value.field


def test_token_never_printed() -> None:
    p = parse_pool_url(GOOD)
    for text in (repr(p), str(p), f"{p.token}", str(p.token), p.url()):
        assert "s3cr3t" not in text
    assert "s3cr3t" in p.url(redact=False)
    assert repr(Secret("abc")) == "Secret('***')"


def test_pools_file(tmp_path) -> None:
    f = tmp_path / "pools.toml"
    f.write_text(
        f'[[pool]]\nuuid = "{UUID1}"\nname = "sp-ssd"\nzone = "z1"\nurl = "{GOOD}"\n'
        f'[[pool]]\nuuid = "{UUID2}"\nname = "sp-hdd"\nurl = "storpool://t@10.0.0.5:8181/hdd"\n'
    )
    pools = load_pools(f)
    assert [p.name for p in pools.pools] == ["sp-ssd", "sp-hdd"]
    assert pools.get(UUID2).template == "hdd"
    assert pools.get("sp-ssd").zone == "z1"
    assert isinstance(pools.get("sp-ssd"), PoolSpec)
    with pytest.raises(ValidationError, match="unknown pool"):
        pools.get("nope")


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        ({"pool": [{"uuid": UUID1, "name": "a"}]}, "pools.pool[0].url", "required"),
        ({"pool": [{"uuid": "not-a-uuid", "name": "a", "url": GOOD}]}, "pools.pool[0].uuid", "not a pool id"),
        ({"pool": [{"uuid": UUID1, "name": "a", "url": GOOD, "colour": 1}]}, "pools.pool[0].colour", "unknown key"),
        ({"pool": [{"uuid": UUID1, "name": "a", "url": "SP_API_HTTP=h"}]}, "pools.pool[0].url.SP_AUTH_TOKEN", "missing"),
        (
            {"pool": [{"uuid": UUID1, "name": "a", "url": GOOD}, {"uuid": UUID2, "name": "b", "url": GOOD}]},
            "pools.pool[1].url", "same API endpoint and template",
        ),
        (
            {"pool": [{"uuid": UUID1, "name": "a", "url": GOOD}, {"uuid": UUID1, "name": "b", "url": GOOD}]},
            "pools.pool[1].uuid", "duplicate uuid",
        ),
        ({"pools": []}, "pools.pools", "unknown top-level key"),
    ],
)
def test_pools_file_validated_as_a_whole(doc: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_pools(doc)
    assert info.value.field == field
    assert words in info.value.message


def test_pools_file_errors(tmp_path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        load_pools(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[pool]\n")
    with pytest.raises(ValidationError, match="not valid TOML"):
        load_pools(bad)


def test_java_pool_ids_are_pool_ids() -> None:
    """The Java plugin rewrites a pool's uuid to `<SP_TEMPLATE>;<uuid>`; names and tags use the uuid
    part, which follows the project's one uuid rule (canonical lower case, as Java's UUID writes it)."""
    assert check_pool_id(f"ssd-r3;{UUID1}") == f"ssd-r3;{UUID1}"
    assert check_pool_id(UUID1) == UUID1
    for bad in ("ssd;not-a-uuid", "bad name;" + UUID1, ";" + UUID1, "x", f"ssd-r3;{UUID1.upper()}", UUID1.upper()):
        with pytest.raises(ValidationError) as info:
            check_pool_id(bad, "pool.uuid")
        assert info.value.field == "pool.uuid"
    pools = parse_pools({"pool": [{"uuid": f"ssd-r3;{UUID1}", "name": "java", "url": GOOD},
                                  {"uuid": UUID2, "name": "own", "url": GOOD.replace("ssd-r3", "hybrid")}]})
    java = pools.get(f"ssd-r3;{UUID1}")
    assert java.key == UUID1 and pools.get(UUID1) is java and pools.get("java") is java
    assert pools.get(UUID2).key == UUID2


def test_template_only_url_reads_the_storpool_configuration(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The Java plugin's URL form `<template>`: endpoint and token from the management server's
    storpool.conf, read by the bindings' own reader."""
    for key in ("SP_API_HTTP_HOST", "SP_API_HTTP_PORT", "SP_AUTH_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    conf = tmp_path / "storpool.conf"
    conf.write_text("SP_API_HTTP_HOST=10.1.2.3\nSP_API_HTTP_PORT=8080\nSP_AUTH_TOKEN=c0nfT0k\n")
    monkeypatch.setenv(STORPOOL_CONF_ENV, str(conf))
    p = parse_pool_url("nvme")
    assert (p.host, p.port, p.template, p.token.reveal()) == ("10.1.2.3", 8080, "nvme", "c0nfT0k")
    conf.write_text("SP_API_HTTP_HOST=10.1.2.3\n")
    with pytest.raises(ValidationError) as info:
        parse_pool_url("nvme")
    assert info.value.field == "storpool.conf.SP_AUTH_TOKEN" and "c0nfT0k" not in str(info.value)
    with pytest.raises(ValidationError) as info:
        parse_pool_url("bad.template")
    assert info.value.field == "url"
