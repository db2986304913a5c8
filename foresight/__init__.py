"""Foresight: predicting why a customer is contacting the bank before they say it.

Data in the public formats of bankcore.events; examples join each contact with the events strictly before it
(foresight.dataset); models share one interface (foresight.predictor): the Transformer, the baselines and,
on simulated data, the simulator's own posterior.
"""
