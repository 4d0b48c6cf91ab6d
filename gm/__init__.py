"""Generator-matching base shared by rfm (flows) and dfm (CTMC jump processes).

Holds kappa_t schedulers, the probability-path and process interfaces, and the one
simulation loop that both continuous and discrete samplers run on.
"""
