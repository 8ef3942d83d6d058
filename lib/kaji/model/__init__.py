"""The offline Juju model: load and check a bundle, then run every unit's real charm without Juju.

``bundle`` loads and checks bundles; ``engine.Model`` runs them (see docs/offline-model.md);
``status`` renders ``juju status``; ``python -m kaji.model`` is the command line.
"""
