"""Jinja templates rendered into HCL that no request value can reshape.

- ``sandbox``: the sandboxed Jinja environment, the output hook, the compiled-template
  cache and the ``Renderer`` the pipeline calls;
- ``hcl_writer``: HCL literals from Python values (``hcl``, ``to_terraform_*``) and the
  escaping rules of every place a value can land;
- ``escaping``: context-aware escaping, i.e. where each ``{{ ... }}`` lands in the HCL
  (bare, string, heredoc, comment), so the output hook escapes it for that place;
- ``lint``: ``templates lint``, every template of the APEX database checked before a job
  meets it (imported on its own: it needs the store and the validator).
"""

from app.core.render.sandbox import CompiledTemplate, HclEnvironment, Renderer

__all__ = ["CompiledTemplate", "HclEnvironment", "Renderer"]
