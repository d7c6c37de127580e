"""The Anthropic HH-RLHF transcript format: the two role tags every prompt and response is cut by.

Its own module because both the data loaders (:mod:`dpo_lab.data.sources`) and the offline corpus generator
(:mod:`dpo_lab.data.corpus`), which the loaders read from, write and parse these tags.
"""

HUMAN_TAG = "\n\nHuman:"
ASSISTANT_TAG = "\n\nAssistant:"
