// The REST commands the dashboard sends (PROTOCOL.md, "REST"): bearer token, JSON in and
// out, errors as `Error`s carrying the server's `code` and HTTP `status`. Reads come from the
// live stream, not from here — except reference data (symbols, klines).

export class Api {
  /** @param {() => string} token the current bearer token */
  constructor(token) {
    this.token = token;
  }

  async request(method, path, body) {
    const headers = { authorization: `Bearer ${this.token()}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const data = res.status === 204 ? null : await res.json().catch(() => null);
    if (!res.ok) {
      const err = new Error(data?.error?.message ?? `${method} ${path}: HTTP ${res.status}`);
      err.code = data?.error?.code ?? "http_error";
      err.status = res.status;
      throw err;
    }
    return data;
  }

  /** `action` is start, pause or stop. */
  botCommand(id, action) {
    return this.request("POST", `/v1/bots/${encodeURIComponent(id)}/${action}`);
  }

  closePosition(id) {
    return this.request("POST", `/v1/positions/${encodeURIComponent(id)}/close`);
  }

  cancelOrder(id) {
    return this.request("DELETE", `/v1/orders/${encodeURIComponent(id)}`);
  }

  async symbols() {
    return (await this.request("GET", "/v1/market/symbols")).items;
  }

  async klines(symbol) {
    return (await this.request("GET", `/v1/market/${encodeURIComponent(symbol)}/klines`)).items;
  }
}
