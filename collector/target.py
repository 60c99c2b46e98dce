"""Demo target for flowprobe: a small farmers-market HTTP API with chaos controls.

It is the application flowprobe monitors in the demo and in integration tests.
Users register and log in, farmers list farms and products, shoppers place and
cancel orders. All data lives in memory inside one app instance, and
authorisation is really enforced, so probes exercise real behaviour.

Each endpoint declares the internal dependencies it relies on (``auth``,
``database``, ``payments``). The ``/chaos`` API injects latency, an error rate
or an outage into any of them, and every endpoint using a broken dependency
degrades with it, so a selective cascade can be produced on purpose.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import secrets
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.params import Depends as DependsParam
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["DEPENDENCIES", "create_app"]

DEPENDENCIES: tuple[str, ...] = ("auth", "database", "payments")

# Deliberately low: the demo needs fast logins, not resistance to offline cracking.
_PBKDF2_ITERATIONS = 1000
_SEED_STOCK = 1_000_000
_SEED_PRODUCTS: tuple[tuple[str, int, str], ...] = (
    ("Heirloom Tomatoes", 450, "kg"),
    ("Free-range Eggs", 600, "dozen"),
    ("Raw Honey", 899, "jar"),
    ("Sourdough Loaf", 550, "each"),
    ("Kale", 300, "bunch"),
    ("Goat Cheese", 725, "each"),
)


# ---------------------------------------------------------------- records


@dataclass
class _User:
    id: str
    email: str
    name: str
    salt: bytes
    password_hash: bytes

    def public(self) -> dict[str, str]:
        return {"id": self.id, "email": self.email, "name": self.name}


@dataclass
class _Farm:
    id: str
    name: str
    location: str
    owner_id: str
    created_at: str


@dataclass
class _Product:
    id: str
    farm_id: str
    name: str
    price_cents: int
    stock: int
    unit: str


@dataclass
class _Order:
    id: str
    product_id: str
    quantity: int
    total_cents: int
    status: str
    client_ref: str
    user_id: str


# ---------------------------------------------------------------- request bodies


class RegisterBody(BaseModel):
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    password: str = Field(min_length=8, max_length=256)
    name: str = Field(min_length=1, max_length=100)


class LoginBody(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=256)


class FarmBody(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    location: str = Field(min_length=1, max_length=200)


class ProductBody(BaseModel):
    farm_id: str
    name: str = Field(min_length=1, max_length=100)
    price_cents: int = Field(gt=0)
    stock: int = Field(ge=0)
    unit: str = Field(default="each", min_length=1, max_length=20)


class OrderBody(BaseModel):
    product_id: str
    quantity: int = Field(ge=1)
    client_ref: str = Field(min_length=1, max_length=200)


class ChaosState(BaseModel):
    # Unknown keys are refused so a typo ("outtage") fails loudly instead of doing nothing;
    # frozen so a state is only ever replaced whole, never half-updated.
    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: int = Field(default=0, ge=0, le=600_000)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    outage: bool = False


# ---------------------------------------------------------------- per-app state


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _PBKDF2_ITERATIONS)


class _Chaos:
    """Injected faults, one state per dependency."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.states: dict[str, ChaosState] = {}
        self.reset()

    def reset(self) -> None:
        self.states = {dep: ChaosState() for dep in DEPENDENCIES}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {dep: state.model_dump() for dep, state in self.states.items()}

    def health(self, dep: str) -> str:
        state = self.states[dep]
        if state.outage:
            return "down"
        if state.error_rate > 0 or state.latency_ms > 0:
            return "degraded"
        return "ok"

    async def sleep(self, dep: str) -> None:
        latency_ms = self.states[dep].latency_ms
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)

    async def disturb(self, dep: str) -> None:
        await self.sleep(dep)
        # Read after the sleep so a fault injected meanwhile applies at once.
        state = self.states[dep]
        if state.outage:
            raise HTTPException(503, f"{dep} unavailable")
        # No draw at error_rate 0, so healthy traffic leaves the seeded sequence alone.
        if state.error_rate > 0 and self.rng.random() < state.error_rate:
            raise HTTPException(500, f"{dep} error")


class _Store:
    """The market's data. Mutations hold the lock so a threaded server stays consistent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users: dict[str, _User] = {}
        self.user_ids_by_email: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.farms: dict[str, _Farm] = {}
        self.products: dict[str, _Product] = {}
        self.orders: dict[str, _Order] = {}
        self.order_ids_by_ref: dict[tuple[str, str], str] = {}

    def add_user(self, email: str, password: str, name: str) -> _User:
        salt = secrets.token_bytes(16)
        user = _User(_new_id("usr"), email, name, salt, _hash_password(password, salt))
        # Mailbox names are case-insensitive in practice, so "A@x" and "a@x" are one account.
        key = email.lower()
        with self.lock:
            if key in self.user_ids_by_email:
                raise HTTPException(409, "email already registered")
            self.users[user.id] = user
            self.user_ids_by_email[key] = user.id
        return user

    def check_password(self, email: str, password: str) -> _User | None:
        user_id = self.user_ids_by_email.get(email.lower())
        user = self.users.get(user_id) if user_id else None
        # Hash even for unknown emails so response time does not reveal which exist.
        salt = user.salt if user else b"\0" * 16
        candidate = _hash_password(password, salt)
        if user and hmac.compare_digest(candidate, user.password_hash):
            return user
        return None

    def delete_user(self, user: _User) -> None:
        with self.lock:
            for order in self.orders.values():
                if order.user_id == user.id:
                    self._cancel(order)
            for farm in [f for f in self.farms.values() if f.owner_id == user.id]:
                self._delete_farm(farm)
            for token in [t for t, uid in self.tokens.items() if uid == user.id]:
                del self.tokens[token]
            del self.user_ids_by_email[user.email.lower()]
            del self.users[user.id]

    def add_farm(self, name: str, location: str, owner_id: str) -> _Farm:
        created_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        farm = _Farm(_new_id("farm"), name, location, owner_id, created_at)
        with self.lock:
            self.farms[farm.id] = farm
        return farm

    def delete_farm(self, farm: _Farm) -> None:
        with self.lock:
            self._delete_farm(farm)

    def _delete_farm(self, farm: _Farm) -> None:
        for product_id in [p.id for p in self.products.values() if p.farm_id == farm.id]:
            del self.products[product_id]
        self.farms.pop(farm.id, None)

    def add_product(self, body: ProductBody) -> _Product:
        product = _Product(_new_id("prd"), **body.model_dump())
        with self.lock:
            self.products[product.id] = product
        return product

    def place_order(self, user: _User, body: OrderBody) -> tuple[_Order, bool]:
        """The order for (user, client_ref), and whether this call created it."""
        with self.lock:
            existing = self.order_ids_by_ref.get((user.id, body.client_ref))
            if existing:
                return self.orders[existing], False
            product = self.products.get(body.product_id)
            if product is None:
                raise HTTPException(404, "product not found")
            if product.stock < body.quantity:
                raise HTTPException(409, "insufficient stock")
            product.stock -= body.quantity
            order = _Order(
                id=_new_id("ord"),
                product_id=product.id,
                quantity=body.quantity,
                total_cents=product.price_cents * body.quantity,
                status="created",
                client_ref=body.client_ref,
                user_id=user.id,
            )
            self.orders[order.id] = order
            self.order_ids_by_ref[(user.id, body.client_ref)] = order.id
            return order, True

    def cancel_order(self, order: _Order) -> None:
        with self.lock:
            self._cancel(order)

    def _cancel(self, order: _Order) -> None:
        if order.status == "cancelled":
            return
        order.status = "cancelled"
        # The product may have gone with its farm; then there is no stock to restore.
        product = self.products.get(order.product_id)
        if product is not None:
            product.stock += order.quantity


@dataclass
class _Target:
    store: _Store
    chaos: _Chaos
    chaos_token: str | None


def _seed(store: _Store, demo_email: str, demo_password: str) -> None:
    store.add_user(demo_email, demo_password, "Demo Probe")
    # Nobody knows the farmer's password, so probes cannot edit the seed catalogue.
    farmer = store.add_user("farmer@flowprobe.local", secrets.token_urlsafe(24), "Seed Farmer")
    farm = store.add_farm("Green Acres", "Willow Creek Valley", farmer.id)
    for name, price_cents, unit in _SEED_PRODUCTS:
        body = ProductBody(
            farm_id=farm.id, name=name, price_cents=price_cents, stock=_SEED_STOCK, unit=unit
        )
        store.add_product(body)


# ---------------------------------------------------------------- request dependencies


def _target(request: Request) -> _Target:
    target: _Target = request.app.state.target
    return target


def uses(*deps: str) -> DependsParam:
    """Route dependency applying the chaos state of each listed dependency, in order."""
    unknown = set(deps) - set(DEPENDENCIES)
    if unknown:
        raise ValueError(f"unknown dependencies: {sorted(unknown)}")

    async def apply_chaos(request: Request) -> None:
        chaos = _target(request).chaos
        for dep in deps:
            await chaos.disturb(dep)

    return Depends(apply_chaos)


_bearer = HTTPBearer(auto_error=False)


def _unauthorized() -> HTTPException:
    return HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


async def _current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> _User:
    if credentials is None:
        raise _unauthorized()
    store = _target(request).store
    user_id = store.tokens.get(credentials.credentials)
    user = store.users.get(user_id) if user_id else None
    if user is None:
        raise _unauthorized()
    return user


def _store(request: Request) -> _Store:
    return _target(request).store


async def _chaos_guard(
    request: Request, x_chaos_token: Annotated[str | None, Header()] = None
) -> _Chaos:
    target = _target(request)
    if target.chaos_token is not None and not (
        x_chaos_token is not None
        and hmac.compare_digest(x_chaos_token.encode(), target.chaos_token.encode())
    ):
        raise HTTPException(401, "invalid chaos token")
    return target.chaos


Store = Annotated[_Store, Depends(_store)]
CurrentUser = Annotated[_User, Depends(_current_user)]
ChaosControl = Annotated[_Chaos, Depends(_chaos_guard)]


def _farm_or_404(store: _Store, farm_id: str) -> _Farm:
    farm = store.farms.get(farm_id)
    if farm is None:
        raise HTTPException(404, "farm not found")
    return farm


def _order_for(store: _Store, order_id: str, user: _User) -> _Order:
    order = store.orders.get(order_id)
    if order is None:
        raise HTTPException(404, "order not found")
    if order.user_id != user.id:
        raise HTTPException(403, "forbidden")
    return order


# ---------------------------------------------------------------- routes
# Routers hold only route definitions; each app gets its own copies via include_router.

_api = APIRouter()


@_api.get("/health")
async def health(request: Request) -> JSONResponse:
    chaos = _target(request).chaos
    # The health check pings the database, so database latency shows here too.
    await chaos.sleep("database")
    dependencies = {dep: chaos.health(dep) for dep in DEPENDENCIES}
    # Without its database the API can serve nothing: that is "down" (503). Another
    # dependency down only degrades some features, as a real health endpoint reports.
    if dependencies["database"] == "down":
        status, code = "down", 503
    elif set(dependencies.values()) != {"ok"}:
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    return JSONResponse({"status": status, "dependencies": dependencies}, status_code=code)


@_api.post("/api/auth/register", status_code=201, dependencies=[uses("auth", "database")])
async def register(body: RegisterBody, store: Store) -> dict[str, str]:
    return store.add_user(body.email, body.password, body.name).public()


@_api.post("/api/auth/login", dependencies=[uses("auth")])
async def login(body: LoginBody, store: Store) -> dict[str, Any]:
    user = store.check_password(body.email, body.password)
    if user is None:
        raise HTTPException(401, "invalid credentials")
    token = secrets.token_urlsafe(24)
    with store.lock:
        store.tokens[token] = user.id
    return {"token": token, "token_type": "bearer", "user": user.public()}


@_api.get("/api/auth/me", dependencies=[uses("auth")])
async def me(user: CurrentUser) -> dict[str, str]:
    return user.public()


@_api.delete("/api/users/me", status_code=204, dependencies=[uses("auth", "database")])
async def delete_me(user: CurrentUser, store: Store) -> None:
    store.delete_user(user)


@_api.post("/api/farms", status_code=201, dependencies=[uses("auth", "database")])
async def create_farm(body: FarmBody, user: CurrentUser, store: Store) -> dict[str, Any]:
    return asdict(store.add_farm(body.name, body.location, user.id))


@_api.get("/api/farms", dependencies=[uses("database")])
async def list_farms(store: Store) -> dict[str, Any]:
    with store.lock:
        items = [asdict(farm) for farm in store.farms.values()]
    return {"items": items, "total": len(items)}


@_api.get("/api/farms/{farm_id}", dependencies=[uses("database")])
async def get_farm(farm_id: str, store: Store) -> dict[str, Any]:
    return asdict(_farm_or_404(store, farm_id))


@_api.delete("/api/farms/{farm_id}", status_code=204, dependencies=[uses("auth", "database")])
async def delete_farm(farm_id: str, user: CurrentUser, store: Store) -> None:
    farm = _farm_or_404(store, farm_id)
    if farm.owner_id != user.id:
        raise HTTPException(403, "forbidden")
    store.delete_farm(farm)


@_api.post("/api/products", status_code=201, dependencies=[uses("auth", "database")])
async def create_product(body: ProductBody, user: CurrentUser, store: Store) -> dict[str, Any]:
    farm = _farm_or_404(store, body.farm_id)
    if farm.owner_id != user.id:
        raise HTTPException(403, "forbidden")
    return asdict(store.add_product(body))


@_api.get("/api/products", dependencies=[uses("database")])
async def list_products(
    store: Store,
    farm_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    with store.lock:
        matching = [p for p in store.products.values() if farm_id is None or p.farm_id == farm_id]
        items = [asdict(p) for p in matching[offset : offset + limit]]
    return {"items": items, "total": len(matching)}


@_api.get("/api/products/{product_id}", dependencies=[uses("database")])
async def get_product(product_id: str, store: Store) -> dict[str, Any]:
    product = store.products.get(product_id)
    if product is None:
        raise HTTPException(404, "product not found")
    return asdict(product)


@_api.post("/api/orders", status_code=201, dependencies=[uses("auth", "database", "payments")])
async def place_order(
    body: OrderBody, user: CurrentUser, store: Store, response: Response
) -> dict[str, Any]:
    order, created = store.place_order(user, body)
    if not created:
        response.status_code = 200
    return asdict(order)


@_api.get("/api/orders/{order_id}", dependencies=[uses("auth", "database")])
async def get_order(order_id: str, user: CurrentUser, store: Store) -> dict[str, Any]:
    return asdict(_order_for(store, order_id, user))


@_api.post("/api/orders/{order_id}/cancel", dependencies=[uses("auth", "database", "payments")])
async def cancel_order(order_id: str, user: CurrentUser, store: Store) -> dict[str, Any]:
    order = _order_for(store, order_id, user)
    store.cancel_order(order)
    return asdict(order)


_chaos = APIRouter(prefix="/chaos")


@_chaos.get("")
async def get_chaos(chaos: ChaosControl) -> dict[str, dict[str, Any]]:
    return chaos.snapshot()


@_chaos.put("/{dependency}")
async def set_chaos(dependency: str, state: ChaosState, chaos: ChaosControl) -> dict[str, Any]:
    if dependency not in DEPENDENCIES:
        raise HTTPException(404, "unknown dependency")
    chaos.states[dependency] = state
    return state.model_dump()


@_chaos.delete("")
async def reset_chaos(chaos: ChaosControl) -> dict[str, dict[str, Any]]:
    chaos.reset()
    return chaos.snapshot()


# ---------------------------------------------------------------- app


async def _error_body(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def create_app(
    *,
    demo_email: str = "demo@flowprobe.local",
    demo_password: str,
    seed: int = 0,
    chaos_token: str | None = None,
) -> FastAPI:
    """A fresh, independent app instance (no module-level mutable state: two apps in one process must not share data)."""
    store = _Store()
    _seed(store, demo_email, demo_password)
    app = FastAPI(title="flowprobe demo target: farmers market", version="1.0")
    app.state.target = _Target(store=store, chaos=_Chaos(seed), chaos_token=chaos_token)
    app.add_exception_handler(StarletteHTTPException, _error_body)
    app.include_router(_api)
    app.include_router(_chaos)
    return app
