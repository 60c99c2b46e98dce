"""Tests for the demo target: the farmers-market API and its chaos controls."""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from collector.target import DEPENDENCIES, create_app

# Starlette 1.x prefers the httpx2 package for its TestClient and warns when it
# falls back to httpx; that fallback is the supported setup here, so silence
# exactly that warning rather than fail collection under filterwarnings=error.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", "Using `httpx` with `starlette.testclient`", StarletteDeprecationWarning
    )
    from fastapi.testclient import TestClient

DEMO_EMAIL = "demo@flowprobe.local"
DEMO_PASSWORD = "demo-password-1"
_emails = itertools.count()


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(demo_password=DEMO_PASSWORD)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: TestClient, email: str = DEMO_EMAIL, password: str = DEMO_PASSWORD) -> str:
    response = client.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def new_user(client: TestClient, name: str = "Someone") -> str:
    """Register a fresh user and return a token for them."""
    email = f"user{next(_emails)}@example.com"
    response = client.post(
        "/api/auth/register", json={"email": email, "password": "s3cret-pass", "name": name}
    )
    assert response.status_code == 201, response.text
    return login(client, email, "s3cret-pass")


def seed_product(client: TestClient) -> dict[str, Any]:
    product: dict[str, Any] = client.get("/api/products").json()["items"][0]
    return product


def place_order(client: TestClient, token: str, product_id: str, quantity: int, ref: str) -> Any:
    return client.post(
        "/api/orders",
        json={"product_id": product_id, "quantity": quantity, "client_ref": ref},
        headers=bearer(token),
    )


# ---------------------------------------------------------------- health and seed data


def test_health_ok(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "dependencies": {"auth": "ok", "database": "ok", "payments": "ok"},
    }


def test_seed_data_has_farm_owned_by_someone_else_and_stocked_products(client: TestClient) -> None:
    farms = client.get("/api/farms").json()
    assert farms["total"] == 1
    farm = farms["items"][0]
    assert farm["name"] == "Green Acres"
    me = client.get("/api/auth/me", headers=bearer(login(client))).json()
    assert me["name"] == "Demo Probe"
    assert farm["owner_id"] != me["id"]
    products = client.get("/api/products", params={"farm_id": farm["id"]}).json()
    assert products["total"] >= 5
    assert all(p["stock"] >= 1_000_000 for p in products["items"])


# ---------------------------------------------------------------- auth and users


def test_register_login_me_delete(client: TestClient) -> None:
    body = {"email": "alice@example.com", "password": "correct-horse", "name": "Alice"}
    registered = client.post("/api/auth/register", json=body)
    assert registered.status_code == 201
    user = registered.json()
    assert user == {"id": user["id"], "email": "alice@example.com", "name": "Alice"}

    credentials = {"email": body["email"], "password": body["password"]}
    logged_in = client.post("/api/auth/login", json=credentials)
    assert logged_in.status_code == 200
    session = logged_in.json()
    assert session["token_type"] == "bearer"
    assert session["user"] == user
    token = session["token"]

    assert client.get("/api/auth/me", headers=bearer(token)).json() == user

    farm = client.post(
        "/api/farms", json={"name": "Alice Acres", "location": "Hill"}, headers=bearer(token)
    ).json()
    assert client.delete("/api/users/me", headers=bearer(token)).status_code == 204
    # The token, the account and the user's farms all went with it.
    assert client.get("/api/auth/me", headers=bearer(token)).status_code == 401
    assert client.post("/api/auth/login", json=credentials).status_code == 401
    assert client.get(f"/api/farms/{farm['id']}").status_code == 404
    # The email is free again.
    assert client.post("/api/auth/register", json=body).status_code == 201


def test_password_is_not_stored_or_returned_in_clear(client: TestClient) -> None:
    body = {"email": "bob@example.com", "password": "plain-text-pw", "name": "Bob"}
    response = client.post("/api/auth/register", json=body)
    assert "plain-text-pw" not in response.text
    store = client.app.state.target.store  # type: ignore[attr-defined]
    user = store.users[response.json()["id"]]
    assert b"plain-text-pw" not in user.password_hash


def test_duplicate_registration_is_409(client: TestClient) -> None:
    body = {"email": "carol@example.com", "password": "password123", "name": "Carol"}
    assert client.post("/api/auth/register", json=body).status_code == 201
    again = client.post("/api/auth/register", json={**body, "email": "CAROL@example.com"})
    assert again.status_code == 409
    assert again.json() == {"error": "email already registered"}


@pytest.mark.parametrize(
    "body",
    [
        {"email": "short@example.com", "password": "short", "name": "X"},
        {"email": "no-at-sign", "password": "password123", "name": "X"},
        {"email": "x@example.com", "password": "password123"},
    ],
)
def test_invalid_registration_is_422(client: TestClient, body: dict[str, str]) -> None:
    assert client.post("/api/auth/register", json=body).status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"email": DEMO_EMAIL, "password": "wrong-password"},
        {"email": "nobody@example.com", "password": DEMO_PASSWORD},
    ],
)
def test_bad_login_is_401(client: TestClient, body: dict[str, str]) -> None:
    response = client.post("/api/auth/login", json=body)
    assert response.status_code == 401
    assert response.json() == {"error": "invalid credentials"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-real-token"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
)
def test_missing_or_invalid_token_is_401_with_challenge(
    client: TestClient, headers: dict[str, str]
) -> None:
    farm = {"name": "F", "location": "L"}
    protected = [("GET", "/api/auth/me"), ("POST", "/api/farms"), ("DELETE", "/api/users/me")]
    for method, path in protected:
        response = client.request(method, path, headers=headers, json=farm)
        assert response.status_code == 401, (method, path)
        assert response.json() == {"error": "unauthorized"}
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_unknown_route_has_error_body(client: TestClient) -> None:
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


# ---------------------------------------------------------------- farms


def test_farm_create_list_get_delete(client: TestClient) -> None:
    owner = new_user(client, "Owner")
    created = client.post(
        "/api/farms", json={"name": "Sunny Side", "location": "Valley"}, headers=bearer(owner)
    )
    assert created.status_code == 201
    farm = created.json()
    me = client.get("/api/auth/me", headers=bearer(owner)).json()
    assert farm["name"] == "Sunny Side"
    assert farm["location"] == "Valley"
    assert farm["owner_id"] == me["id"]
    assert farm["created_at"]

    listing = client.get("/api/farms").json()
    assert listing["total"] == 2
    assert farm in listing["items"]
    assert client.get(f"/api/farms/{farm['id']}").json() == farm

    product = client.post(
        "/api/products",
        json={"farm_id": farm["id"], "name": "Plums", "price_cents": 100, "stock": 3},
        headers=bearer(owner),
    ).json()

    assert client.delete(f"/api/farms/{farm['id']}", headers=bearer(owner)).status_code == 204
    missing = client.get(f"/api/farms/{farm['id']}")
    assert missing.status_code == 404
    assert missing.json() == {"error": "farm not found"}
    assert client.get(f"/api/products/{product['id']}").status_code == 404
    assert client.delete(f"/api/farms/{farm['id']}", headers=bearer(owner)).status_code == 404


def test_only_owner_can_delete_farm(client: TestClient) -> None:
    owner, other = new_user(client), new_user(client)
    farm = client.post(
        "/api/farms", json={"name": "Mine", "location": "Here"}, headers=bearer(owner)
    ).json()
    response = client.delete(f"/api/farms/{farm['id']}", headers=bearer(other))
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden"}
    assert client.get(f"/api/farms/{farm['id']}").status_code == 200


# ---------------------------------------------------------------- products


def test_product_create_by_owner_and_403_for_others(client: TestClient) -> None:
    owner, other = new_user(client), new_user(client)
    farm = client.post(
        "/api/farms", json={"name": "Orchard", "location": "North"}, headers=bearer(owner)
    ).json()
    body = {"farm_id": farm["id"], "name": "Apples", "price_cents": 250, "stock": 10}

    created = client.post("/api/products", json=body, headers=bearer(owner))
    assert created.status_code == 201
    product = created.json()
    assert product == {**body, "id": product["id"], "unit": "each"}
    assert client.get(f"/api/products/{product['id']}").json() == product

    denied = client.post("/api/products", json=body, headers=bearer(other))
    assert denied.status_code == 403
    assert denied.json() == {"error": "forbidden"}
    # The seed farm belongs to the seed farmer, not the demo user.
    seed_farm = client.get("/api/farms").json()["items"][0]["id"]
    assert client.post(
        "/api/products", json={**body, "farm_id": seed_farm}, headers=bearer(login(client))
    ).status_code == 403

    missing = client.post("/api/products", json={**body, "farm_id": "nope"}, headers=bearer(owner))
    assert missing.status_code == 404
    for bad in [{"price_cents": 0}, {"stock": -1}]:
        invalid = client.post("/api/products", json={**body, **bad}, headers=bearer(owner))
        assert invalid.status_code == 422, bad


def test_product_list_filter_and_pagination(client: TestClient) -> None:
    owner = new_user(client)
    farm = client.post(
        "/api/farms", json={"name": "Greens", "location": "East"}, headers=bearer(owner)
    ).json()
    names = [f"veg-{i}" for i in range(7)]
    for name in names:
        client.post(
            "/api/products",
            json={"farm_id": farm["id"], "name": name, "price_cents": 10, "stock": 1, "unit": "kg"},
            headers=bearer(owner),
        )

    everything = client.get("/api/products").json()
    mine = client.get("/api/products", params={"farm_id": farm["id"]}).json()
    assert mine["total"] == 7
    assert everything["total"] == mine["total"] + seed_count(client)
    assert [p["name"] for p in mine["items"]] == names

    by_farm = {"farm_id": farm["id"], "limit": 3}
    page = client.get("/api/products", params={**by_farm, "offset": 2}).json()
    assert page["total"] == 7
    assert [p["name"] for p in page["items"]] == names[2:5]
    tail = client.get("/api/products", params={**by_farm, "offset": 6}).json()
    assert [p["name"] for p in tail["items"]] == names[6:]

    assert client.get("/api/products", params={"limit": 201}).status_code == 422
    assert client.get("/api/products", params={"offset": -1}).status_code == 422
    assert client.get("/api/products/nope").json() == {"error": "product not found"}


def seed_count(client: TestClient) -> int:
    seed_farm = client.get("/api/farms").json()["items"][0]["id"]
    total: int = client.get("/api/products", params={"farm_id": seed_farm}).json()["total"]
    return total


# ---------------------------------------------------------------- orders


def test_order_create_idempotent_get_and_403(client: TestClient) -> None:
    token = login(client)
    product = seed_product(client)

    created = place_order(client, token, product["id"], 3, "ref-1")
    assert created.status_code == 201
    order = created.json()
    me = client.get("/api/auth/me", headers=bearer(token)).json()
    assert order == {
        "id": order["id"],
        "product_id": product["id"],
        "quantity": 3,
        "total_cents": 3 * product["price_cents"],
        "status": "created",
        "client_ref": "ref-1",
        "user_id": me["id"],
    }
    after_first = client.get(f"/api/products/{product['id']}").json()["stock"]
    assert after_first == product["stock"] - 3

    repeat = place_order(client, token, product["id"], 3, "ref-1")
    assert repeat.status_code == 200
    assert repeat.json() == order
    assert client.get(f"/api/products/{product['id']}").json()["stock"] == after_first

    # The same client_ref from another user is a different order.
    other = new_user(client)
    theirs = place_order(client, other, product["id"], 1, "ref-1")
    assert theirs.status_code == 201
    assert theirs.json()["id"] != order["id"]

    assert client.get(f"/api/orders/{order['id']}", headers=bearer(token)).json() == order
    denied = client.get(f"/api/orders/{order['id']}", headers=bearer(other))
    assert denied.status_code == 403
    assert denied.json() == {"error": "forbidden"}
    cancel_theirs = client.post(f"/api/orders/{order['id']}/cancel", headers=bearer(other))
    assert cancel_theirs.status_code == 403
    assert client.get("/api/orders/nope", headers=bearer(token)).status_code == 404
    assert client.post("/api/orders/nope/cancel", headers=bearer(token)).status_code == 404
    assert place_order(client, token, "nope", 1, "ref-x").status_code == 404


def test_cancel_restores_stock_and_is_idempotent(client: TestClient) -> None:
    token = login(client)
    product = seed_product(client)
    order = place_order(client, token, product["id"], 5, "cancel-me").json()
    assert client.get(f"/api/products/{product['id']}").json()["stock"] == product["stock"] - 5

    for _ in range(2):
        cancelled = client.post(f"/api/orders/{order['id']}/cancel", headers=bearer(token))
        assert cancelled.status_code == 200
        assert cancelled.json() == {**order, "status": "cancelled"}
        assert client.get(f"/api/products/{product['id']}").json()["stock"] == product["stock"]


def test_insufficient_stock_is_409(client: TestClient) -> None:
    owner = new_user(client)
    farm = client.post(
        "/api/farms", json={"name": "Tiny", "location": "Corner"}, headers=bearer(owner)
    ).json()
    product = client.post(
        "/api/products",
        json={"farm_id": farm["id"], "name": "Truffle", "price_cents": 9999, "stock": 2},
        headers=bearer(owner),
    ).json()
    token = login(client)

    too_many = place_order(client, token, product["id"], 3, "greedy")
    assert too_many.status_code == 409
    assert too_many.json() == {"error": "insufficient stock"}
    assert place_order(client, token, product["id"], 2, "fair").status_code == 201
    assert place_order(client, token, product["id"], 1, "late").status_code == 409
    assert client.get(f"/api/products/{product['id']}").json()["stock"] == 0


def test_deleting_user_cancels_their_orders(client: TestClient) -> None:
    token = new_user(client)
    product = seed_product(client)
    place_order(client, token, product["id"], 4, "gone")
    assert client.delete("/api/users/me", headers=bearer(token)).status_code == 204
    assert client.get(f"/api/products/{product['id']}").json()["stock"] == product["stock"]


# ---------------------------------------------------------------- chaos


def test_chaos_starts_healthy(client: TestClient) -> None:
    healthy = {"latency_ms": 0, "error_rate": 0.0, "outage": False}
    assert client.get("/chaos").json() == {dep: healthy for dep in DEPENDENCIES}


def test_database_outage_cascades_but_spares_auth_only_endpoints(client: TestClient) -> None:
    put = client.put("/chaos/database", json={"outage": True})
    assert put.status_code == 200
    assert put.json() == {"latency_ms": 0, "error_rate": 0.0, "outage": True}

    health = client.get("/health")
    assert health.status_code == 503
    assert health.json() == {
        "status": "down",
        "dependencies": {"auth": "ok", "database": "down", "payments": "ok"},
    }
    products = client.get("/api/products")
    assert products.status_code == 503
    assert products.json() == {"error": "database unavailable"}
    assert login(client)


def test_payments_outage_only_breaks_payment_endpoints(client: TestClient) -> None:
    token = login(client)
    product = seed_product(client)
    client.put("/chaos/payments", json={"outage": True})

    response = place_order(client, token, product["id"], 1, "during-outage")
    assert response.status_code == 503
    assert response.json() == {"error": "payments unavailable"}
    assert client.get("/api/products").status_code == 200
    # The API is up without payments: health says degraded, not down.
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "degraded", "dependencies": {"auth": "ok", "database": "ok", "payments": "down"}}
    # Nothing was ordered, so no stock moved.
    assert client.get(f"/api/products/{product['id']}").json()["stock"] == product["stock"]


def test_degraded_health_and_error_rate(client: TestClient) -> None:
    client.put("/chaos/auth", json={"error_rate": 1.0})
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["dependencies"]["auth"] == "degraded"

    for _ in range(3):
        response = client.post(
            "/api/auth/login", json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD}
        )
        assert response.status_code == 500
        assert response.json() == {"error": "auth error"}
    assert client.get("/api/farms").status_code == 200


def test_error_rate_is_seeded_and_partial() -> None:
    def outcomes(seed: int) -> list[int]:
        with TestClient(create_app(demo_password=DEMO_PASSWORD, seed=seed)) as c:
            c.put("/chaos/database", json={"error_rate": 0.5})
            return [c.get("/api/farms").status_code for _ in range(40)]

    first = outcomes(7)
    assert first == outcomes(7)
    assert set(first) == {200, 500}


def test_latency_slows_responses(client: TestClient) -> None:
    latency_s = 0.2
    client.put("/chaos/database", json={"latency_ms": int(latency_s * 1000)})
    for path in ["/api/products", "/health"]:
        started = time.perf_counter()
        response = client.get(path)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200
        assert elapsed >= latency_s, path
    assert client.get("/health").json()["dependencies"]["database"] == "degraded"


def test_delete_chaos_resets(client: TestClient) -> None:
    for dep in DEPENDENCIES:
        client.put(f"/chaos/{dep}", json={"outage": True, "latency_ms": 1})
    assert client.get("/health").status_code == 503

    reset = client.delete("/chaos")
    assert reset.status_code == 200
    healthy = {"latency_ms": 0, "error_rate": 0.0, "outage": False}
    assert reset.json() == {dep: healthy for dep in DEPENDENCIES}
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/api/products").status_code == 200


def test_chaos_put_replaces_state_and_validates(client: TestClient) -> None:
    client.put("/chaos/payments", json={"outage": True, "latency_ms": 5})
    replaced = client.put("/chaos/payments", json={"error_rate": 0.25})
    assert replaced.json() == {"latency_ms": 0, "error_rate": 0.25, "outage": False}

    unknown = client.put("/chaos/cache", json={})
    assert unknown.status_code == 404
    assert "error" in unknown.json()
    bad_bodies: list[dict[str, Any]] = [
        {"error_rate": 1.5},
        {"error_rate": -0.1},
        {"latency_ms": -1},
        {"outage": "maybe"},
        {"outtage": True},
    ]
    for bad in bad_bodies:
        assert client.put("/chaos/auth", json=bad).status_code == 422, bad


def test_chaos_token_enforced_when_set() -> None:
    with TestClient(create_app(demo_password=DEMO_PASSWORD, chaos_token="tok-123")) as c:
        for headers in [{}, {"X-Chaos-Token": "wrong"}]:
            assert c.get("/chaos", headers=headers).status_code == 401
            assert c.put("/chaos/auth", json={"outage": True}, headers=headers).status_code == 401
            assert c.delete("/chaos", headers=headers).status_code == 401
        assert c.get("/health").status_code == 200

        good = {"X-Chaos-Token": "tok-123"}
        assert c.get("/chaos", headers=good).status_code == 200
        assert c.put("/chaos/database", json={"outage": True}, headers=good).status_code == 200
        assert c.get("/health").status_code == 503
        assert c.delete("/chaos", headers=good).status_code == 200


def test_two_apps_do_not_share_state() -> None:
    with (
        TestClient(create_app(demo_password="first-password")) as a,
        TestClient(create_app(demo_password="second-password")) as b,
    ):
        a.put("/chaos/database", json={"outage": True})
        assert a.get("/health").status_code == 503
        assert b.get("/health").status_code == 200

        token = new_user(b)
        b.post("/api/farms", json={"name": "Only in B", "location": "B"}, headers=bearer(token))
        assert b.get("/api/farms").json()["total"] == 2
        a.delete("/chaos")
        assert a.get("/api/farms").json()["total"] == 1

        assert login(a, password="first-password")
        wrong = a.post("/api/auth/login", json={"email": DEMO_EMAIL, "password": "second-password"})
        assert wrong.status_code == 401
        assert a.get("/api/auth/me", headers=bearer(token)).status_code == 401
