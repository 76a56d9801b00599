"""Model towers. Parameters carry logical axis names; medjax.sharding maps them to the mesh."""
from flax import nnx

# medjax places every array itself (jit out_shardings derived from the logical names), so Flax
# must not try to shard variables eagerly at creation, which needs a mesh in context.
nnx.use_eager_sharding(False)
