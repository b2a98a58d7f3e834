"""The request bodies HELM and the challenge's sample client send, as they send them."""

# HELM's own request body (helm/clients/http_model_client.py): every field it sends, temperature 0 as 1e-7.
HELM_PROCESS = {"prompt": "the model data train", "temperature": 1e-7, "num_return_sequences": 1, "max_new_tokens": 12,
                "top_p": 1, "echo_prompt": False, "top_k_per_token": 1, "stop_sequences": []}
# The NeurIPS 2023 challenge's sample client body (sample-submissions/lit-gpt): num_samples, top_k, seed.
SAMPLE_PROCESS = {"prompt": "the model data train", "num_samples": 1, "max_new_tokens": 12, "top_k": 200,
                  "temperature": 0.8, "seed": 1234, "echo_prompt": False}
HELM_TOKENIZE = {"text": "the model data train", "truncation": True, "max_length": 2048}
