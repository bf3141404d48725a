"""The platform's database schema: the spec as data, applied to and verified against MongoDB.

``spec``   the spec (shared/spec/database-schema.md) encoded once: collections, fields, indexes,
           rules; builds the ``$jsonSchema`` validators
``verify`` live database vs spec -> a list of ``Drift`` (each with its fix, or manual)
``apply``  create what is missing; fix drift only with ``migrate=True``; never drops
``cli``    ``ingestor schema apply [--migrate] | verify``

Decisions (brief collections, what is enforced where and why) are in the project README's
schema section.
"""

from ingestor.schema.apply import ApplyReport, apply
from ingestor.schema.spec import COLLECTIONS, Collection, by_name
from ingestor.schema.verify import Drift, diff

__all__ = ["COLLECTIONS", "ApplyReport", "Collection", "Drift", "apply", "by_name", "diff"]
