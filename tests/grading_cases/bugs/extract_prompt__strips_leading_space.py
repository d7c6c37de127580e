# caught by: single turn
def extract_prompt(chosen_text, rejected_text):
    tag = "\n\nAssistant:"
    cut = chosen_text.rfind(tag)
    if cut < 0 or rejected_text.rfind(tag) < 0:
        raise ValueError("no Assistant tag")
    prompt = chosen_text[: cut + len(tag)]
    if not rejected_text.startswith(prompt):
        raise ValueError("different prompts")
    return prompt, chosen_text[len(prompt):].strip(), rejected_text[len(prompt):].strip()  # the leading space is part of the response
