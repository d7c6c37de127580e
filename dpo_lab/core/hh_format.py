"""The Anthropic HH-RLHF transcript format: the two role tags every prompt and response is cut by.

Its own module because both the data loaders (:mod:`dpo_lab.data.sources`) and the offline corpus generator
(:mod:`dpo_lab.data.corpus`), which the loaders read from, write and parse these tags.
"""

HUMAN_TAG = "\n\nHuman:"
ASSISTANT_TAG = "\n\nAssistant:"
SYSTEM_TAG = "\n\nSystem:"

# The chat template saved with every checkpoint: messages become exactly the transcript the model was
# trained on (each turn is its tag, one space, the content; the generation prompt is the open
# Assistant tag), so `pipeline("text-generation")` with messages, `transformers chat` / `transformers
# serve` and any OpenAI-compatible client send the model the prompt format it knows.
HH_CHAT_TEMPLATE = (
    "{%- set tags = {'user': '\\n\\nHuman:', 'human': '\\n\\nHuman:', 'assistant': '\\n\\nAssistant:',"
    " 'system': '\\n\\nSystem:'} -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in tags -%}"
    "{{ raise_exception('role ' ~ message['role'] ~ ' is not one of user, assistant, system') }}"
    "{%- endif -%}"
    "{{ tags[message['role']] ~ ' ' ~ message['content'] }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '\\n\\nAssistant:' }}{%- endif -%}"
)


def with_hh_chat_template(tokenizer):
    """`tokenizer` with :data:`HH_CHAT_TEMPLATE` set; any other template is replaced (the lab trains on HH turns)."""
    tokenizer.chat_template = HH_CHAT_TEMPLATE
    return tokenizer
