"""Bad input, fuzzed: property-based tests (hypothesis) that every driver runs.

Random keys, values, ttls, versions, transactions, glob patterns and URLs are thrown
at a real store, and four properties are checked on every example:

1. Only documented libkv errors are raised: `KVError` subclasses, and for a bad
   argument (ttl, version, glob, transaction size or shape) a `KVError` that is also a
   `ValueError`. Nothing else escapes.
2. A rejected operation writes nothing: `list("")` is unchanged, and the watch open
   meanwhile reports no change that an accepted call did not make.
3. An accepted operation behaves like a model: a plain dict of the store's pairs,
   maintained here from the contract alone (an independent oracle for key validity,
   value encoding, ttl ranges, version ranges, conditions and glob matching), predicts
   the result or the condition error of every call, and `list("")` equals it after
   every call.
4. A recursive watch open over each example stays consistent: its history passes
   `libkv.testing.history.assert_valid_history`, every UPDATE it reports is a pair an
   accepted write returned, every DELETE one an accepted delete (or an expiry) made,
   and INIT + events replayed equals `list("")` within the convergence bound. Where
   `capabilities.watch_every_change`, every accepted write is reported and every
   delete exactly once.

A driver's test class subclasses `PropertyConformance` next to `StoreConformance`
and provides the same function-scoped `url` fixture. Each test opens its own clients
of that URL and runs an inner hypothesis property; every example starts by emptying
the namespace, so examples are independent and no function-scoped fixture is shared
across them. Example counts are small (`property_examples`, default 25; a driver
class may raise it), `deadline=None` (a network round trip is not a bug), and with
the `CI` environment variable set the examples are derandomized so that a failure on
CI reproduces by re-running the same test.

The package, by role: `oracle` (the contract's rules for keys, values, ttls, versions
and globs, written independently of libkv), `calls` (one Store call with possibly bad
arguments), `strategies` (the hypothesis strategies), `model` (the model of the store
and the checks of one example against it) and `conformance` (the mixin and its tests).
"""

from libkv.testing.properties.conformance import PropertyConformance

__all__ = ["PropertyConformance"]
