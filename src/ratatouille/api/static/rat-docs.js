// The API docs page: ask for a token, fetch the OpenAPI document with it, show it in Swagger UI.
// The token is kept in this tab's sessionStorage only and sent only to this server.
(function () {
  "use strict";
  var KEY = "ratatouille-api-token";
  var specUrl = document.currentScript.dataset.spec;
  var form = document.getElementById("rat-token");
  var input = document.getElementById("rat-token-value");
  var error = document.getElementById("rat-token-error");
  var bar = document.getElementById("rat-bar");

  function ask(message) {
    bar.hidden = true;
    form.hidden = false;
    error.textContent = message || "";
    input.focus();
  }

  function show(spec, token) {
    form.hidden = true;
    bar.hidden = false;
    var ui = window.SwaggerUIBundle({
      spec: spec,
      dom_id: "#swagger-ui",
      validatorUrl: null,
      deepLinking: true,
      onComplete: function () {
        if (token) {
          ui.preauthorizeApiKey("token", token);
        }
      },
    });
  }

  function load(token) {
    var headers = token ? { Authorization: "Bearer " + token } : {};
    return fetch(specUrl, { headers: headers, credentials: "omit", cache: "no-store" }).then(function (response) {
      if (response.status === 401) {
        sessionStorage.removeItem(KEY);
        return response.json().then(function (body) {
          ask(token ? body.error.message : "");
        });
      }
      if (!response.ok) {
        return ask("The server answered " + response.status + "; see its log.");
      }
      return response.json().then(function (spec) {
        if (token) {
          sessionStorage.setItem(KEY, token);
        }
        show(spec, token);
      });
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    load(input.value.trim());
  });
  document.getElementById("rat-forget").addEventListener("click", function () {
    sessionStorage.removeItem(KEY);
    window.location.reload();
  });
  // A token from an earlier visit in this tab; without one, the request may still carry a header
  // that a proxy in front of the server adds.
  load(sessionStorage.getItem(KEY)).catch(function (err) {
    ask("Cannot reach the server: " + err);
  });
})();
