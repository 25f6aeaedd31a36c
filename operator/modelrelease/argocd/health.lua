-- Argo CD health of a ModelRelease (modelrelease.io/v1alpha1).
-- Healthy: Released, and the operator has seen the current spec (generation).
-- Progressing: pending, training, progressing, promoting, rolling back, or not yet observed.
-- Suspended: paused (by spec.paused, the modelrelease.io/paused annotation, or analysis).
-- Degraded: rolled back, failed, or an invalid spec; the message says why.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the release"
  return hs
end
local status = obj.status
local phase = status.phase
local message = status.message or ""
if status.failure ~= nil and status.failure.message ~= nil then
  message = status.failure.reason .. ": " .. status.failure.message
end
local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation and phase ~= "Invalid" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end
if phase == "Released" then
  hs.status = "Healthy"
  if status.stable ~= nil and status.stable.name ~= nil then
    hs.message = status.stable.name .. " is stable"
  else
    hs.message = message
  end
elseif phase == "Paused" then
  hs.status = "Suspended"
  hs.message = message
elseif phase == "RolledBack" or phase == "Failed" or phase == "Invalid" then
  hs.status = "Degraded"
  hs.message = message
else
  hs.status = "Progressing"
  hs.message = message
end
return hs
