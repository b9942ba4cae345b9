"""OpenAPI 3 document -> entity declarations.  Pure (a parsed document in, data out), but
for :func:`~schemas.importer.importing.import_file`, which reads the document and the
override table and writes the declarations file.

Every "Create or Update Batch" operation (a ``PUT`` whose body is an array of one model)
becomes an entity:

- its **fields** come from the model's properties, each of the kind whose row maps its
  OpenAPI type (schemas/kinds.py, ``KindSpec.openapi``);
- its **key** comes from the single-item path of the same model: one field per path
  parameter;
- its **bindings** come from the batch path's parameters;
- its **parents** come from nesting (the entity whose item path is the batch path's prefix)
  and from ``x-references`` (a foreign key to the referenced entity's table, or to a
  key-only table where the reference has no endpoint).

A path parameter maps to a field by name, ignoring case and ``_``.  Where it does not,
a small rule set and the reviewed override table (``schemas/overrides.toml``) resolve it;
every such case is reported in :attr:`Imported.notes`, and one that nothing resolves is an
:class:`ImportFailed`.  Nothing is guessed silently.

- :mod:`~schemas.importer.document`: reading the document, and each property as a field;
- :mod:`~schemas.importer.naming`: the naming rules and the override table;
- :mod:`~schemas.importer.references`: the parents, from nesting and x-references;
- :mod:`~schemas.importer.importing`: the import as a whole, and the file written;
- :mod:`~schemas.importer.rendering`: the declarations as diff-friendly JSON.
"""

from schemas.importer.importing import OVERRIDES, Imported, import_document, import_file
from schemas.importer.naming import ImportFailed, Overrides, snake_case
from schemas.importer.rendering import render

__all__ = ["OVERRIDES", "ImportFailed", "Imported", "Overrides", "import_document",
           "import_file", "render", "snake_case"]
