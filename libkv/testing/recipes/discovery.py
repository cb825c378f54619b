"""ServiceRegistry: registering, listing and deregistering, bad input, stray keys,
keep-alive and death with the store, and watching the membership.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

import libkv
from libkv import Store
from libkv.recipes import Membership, ServiceInstance, ServiceRegistry
from libkv.testing.conformance.base import CONVERGENCE_BOUND, DELIVERY_MARGIN, EVENT_TIMEOUT
from libkv.testing.flavours import Recipes
from libkv.testing.polling import assert_holds_until, wait_until
from libkv.testing.recipes.base import RecipeConformanceBase

__all__ = ["DiscoveryRecipeConformance"]


class DiscoveryRecipeConformance(RecipeConformanceBase):
    """ServiceRegistry."""

    @staticmethod
    def membership(registry: ServiceRegistry, service: str) -> list[tuple[str, str]]:
        return [(member.id, member.address) for member in registry.instances(service)]

    def test_registry_registers_lists_and_deregisters(
        self, recipes: Recipes, store: Store, other_store: Store
    ) -> None:
        """Registered instances are listed (sorted by id) by any client, with their
        address and metadata; their values are the documented JSON; deregister() and
        leaving the with block delete them at once."""
        registry = recipes.ServiceRegistry(store)
        reader = recipes.ServiceRegistry(other_store)
        ttl = self.ttl_for(store)
        second = registry.register("api", "10.0.0.2:80", instance_id="b", ttl=ttl)
        first = registry.register(
            "api", "10.0.0.1:80", instance_id="a", metadata={"zone": "eu", "weight": 2}, ttl=ttl
        )
        with registry.register("web", "http://10.0.0.3", ttl=ttl) as web:
            assert len(web.id) == 32 and web.registered
            assert reader.services() == ["api", "web"]
            assert [pair.key for pair in other_store.list("services/web")] == [
                f"services/web/{web.id}"
            ]
        assert reader.services() == ["api"]
        members = reader.instances("api")
        assert members == [
            ServiceInstance(
                "api", "a", "10.0.0.1:80", {"zone": "eu", "weight": 2}, members[0].version
            ),
            ServiceInstance("api", "b", "10.0.0.2:80", {}, members[1].version),
        ]
        assert members[0].version == other_store.get("services/api/a").version
        assert json.loads(other_store.get("services/api/a").value) == {
            "service": "api",
            "id": "a",
            "address": "10.0.0.1:80",
            "metadata": {"zone": "eu", "weight": 2},
        }
        first.deregister()
        first.deregister()  # harmless
        assert not first.registered
        assert self.membership(reader, "api") == [("b", "10.0.0.2:80")]
        second.deregister()
        assert reader.instances("api") == [] and reader.services() == []
        assert other_store.list() == []

    def test_registry_refuses_bad_names_and_values_and_writes_nothing(
        self, recipes: Recipes, store: Store
    ) -> None:
        """A service name or instance id that is not one key segment is an
        InvalidKeyError; metadata that is not JSON or an empty address an
        InvalidValueError; nothing is written."""
        registry = recipes.ServiceRegistry(store)
        calls: list[tuple[Callable[[], object], type[Exception]]] = [
            (lambda: registry.register("a/b", "x"), libkv.InvalidKeyError),
            (lambda: registry.register("", "x"), libkv.InvalidKeyError),
            (lambda: registry.register("api", "x", instance_id="1/2"), libkv.InvalidKeyError),
            (lambda: registry.register("api", "x", instance_id=".."), libkv.InvalidKeyError),
            (
                lambda: registry.register("api", "x", metadata={"a": object()}),
                libkv.InvalidValueError,
            ),
            (lambda: registry.register("api", ""), libkv.InvalidValueError),
            (lambda: registry.instances("a/b"), libkv.InvalidKeyError),
            (lambda: registry.watch("a/b"), libkv.InvalidKeyError),
        ]
        for call, error in calls:
            with pytest.raises(error):
                call()
        assert store.list() == []

    def test_registry_skips_keys_that_are_not_instances(
        self, recipes: Recipes, store: Store
    ) -> None:
        """A key under the root that is not <service>/<id> holding the JSON object is
        skipped by readers, never fatal."""
        registry = recipes.ServiceRegistry(store, root="reg")
        with registry.register("api", "10.0.0.1:80", instance_id="good", ttl=self.ttl_for(store)):
            store.put("reg/api/not-json", b"\xff{")
            store.put("reg/api/no-address", b'{"metadata": {}}')
            store.put("reg/api/deep/x", b'{"address": "a"}')
            store.put("reg/stray", b'{"address": "a"}')
            assert self.membership(registry, "api") == [("good", "10.0.0.1:80")]
            assert registry.services() == ["api"]
            with registry.watch("api") as watch:
                assert [member.id for member in watch.next(EVENT_TIMEOUT) or []] == ["good"]

    def test_registered_instance_outlives_its_ttl_and_dies_with_its_store(
        self, recipes: Recipes, store: Store, other_store: Store
    ) -> None:
        """A held registration is kept alive past its ttl; when its store is closed
        without deregistering (as a dying process would), it is gone within
        latest_expiry(ttl)."""
        ttl = self.ttl_for(store)
        reader = recipes.ServiceRegistry(other_store)
        instance = recipes.ServiceRegistry(store).register(
            "api", "10.0.0.1:80", instance_id="a", ttl=ttl
        )
        assert_holds_until(
            lambda: self.membership(reader, "api") == [("a", "10.0.0.1:80")],
            time.monotonic() + self.expiry_bound(store, ttl),
            message="a held registration expired",
        )
        assert instance.registered and instance.registrations == 1
        store.close()
        closed = time.monotonic()
        wait_until(
            lambda: reader.instances("api") == [],
            closed + self.expiry_bound(store, ttl) - time.monotonic(),
            message="the registration of a closed store outlived latest_expiry(ttl)",
        )

    def test_registry_watch_yields_the_membership_on_every_change(
        self, recipes: Recipes, store: Store, other_store: Store
    ) -> None:
        """watch(service) yields the current membership, then the whole new membership
        after each registration, re-registration and deregistration, promptly."""
        ttl = self.ttl_for(store)
        registry = recipes.ServiceRegistry(other_store)
        other = registry.register("other", "x", ttl=ttl)

        def next_ids(watch: Membership) -> list[str]:
            members = watch.next(CONVERGENCE_BOUND + DELIVERY_MARGIN)
            assert members is not None, "no new membership within the convergence bound"
            return [member.id for member in members]

        with recipes.ServiceRegistry(store).watch("api") as watch:
            assert next_ids(watch) == []
            first = registry.register("api", "10.0.0.1:80", instance_id="a", ttl=ttl)
            assert next_ids(watch) == ["a"]
            second = registry.register("api", "10.0.0.2:80", instance_id="b", ttl=ttl)
            assert next_ids(watch) == ["a", "b"]
            again = registry.register("api", "10.0.0.9:80", instance_id="a", ttl=ttl)
            members = watch.next(CONVERGENCE_BOUND + DELIVERY_MARGIN)
            assert members is not None and members[0].address == "10.0.0.9:80"
            first.deregister()  # its key now belongs to the newer registration: kept
            second.deregister()
            assert next_ids(watch) == ["a"]
            again.deregister()
            assert next_ids(watch) == []
            assert watch.next(0.2) is None  # nothing changed: nothing yielded
        assert watch.next(EVENT_TIMEOUT) is None  # closed
        assert list(watch) == []
        other.deregister()
