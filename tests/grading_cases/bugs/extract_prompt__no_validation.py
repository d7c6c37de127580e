# caught by: no Assistant turn → ValueError
def extract_prompt(chosen_text, rejected_text):
    tag = "\n\nAssistant:"
    cut = chosen_text.rfind(tag)  # -1 when missing: silently returns a wrong split
    prompt = chosen_text[: cut + len(tag)]
    return prompt, chosen_text[len(prompt):], rejected_text[len(prompt):]
