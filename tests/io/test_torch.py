"""torch.Tensor parameters and results, through the app."""

from __future__ import annotations

import asyncio
import io
from typing import Annotated

import numpy as np
import torch

import tiffin
from tests.server.asgi import serving


@tiffin.service
class Net:
    def __init__(self) -> None:
        self.layer = torch.nn.Linear(3, 2)
        with torch.no_grad():
            self.layer.weight.fill_(1.0)
            self.layer.bias.zero_()

    @tiffin.api
    def forward(self, x: Annotated[torch.Tensor, tiffin.Shape(-1, 3)]) -> torch.Tensor:
        assert x.dtype == torch.float32
        with torch.no_grad():
            out: torch.Tensor = self.layer(x)
        return out

    @tiffin.api
    def counts(self, ids: Annotated[torch.Tensor, tiffin.DType("int64")]) -> torch.Tensor:
        return torch.bincount(ids)


def test_tensors_in_and_out() -> None:
    async def main() -> None:
        async with serving(Net) as (client, _):
            response = await client.post("/forward", json={"x": [[1, 2, 3], [0, 0, 1]]})
            assert response.status_code == 200
            assert response.json() == [[6.0, 6.0], [1.0, 1.0]]

            bad = await client.post("/forward", json={"x": [[1, 2]]})
            assert bad.status_code == 422
            assert bad.json()["error"]["detail"]["errors"] == [
                {"loc": "x", "msg": "must have shape (any, 3), got (1, 2)"}
            ]

            npy = io.BytesIO()
            np.save(npy, np.ones((1, 3), dtype=np.float64))
            binary = await client.post(
                "/forward",
                content=npy.getvalue(),
                headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
            )
            assert np.load(io.BytesIO(binary.content)).tolist() == [[3.0, 3.0]]

            counted = await client.post("/counts", json={"ids": [0, 2, 2]})
            assert counted.json() == [1, 0, 2]

            schema = (await client.get("/openapi.json")).json()
            body = schema["paths"]["/forward"]["post"]["requestBody"]["content"]
            x = body["application/json"]["schema"]["properties"]["x"]
            assert x["items"]["maxItems"] == 3

    asyncio.run(main())
